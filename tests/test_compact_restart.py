"""Issue 6: after a restart, rows share their empty maps and sets and equal strings
(pyxapi/db/persist.py); through the API, a write to one object still changes that
object only, and survives the next restart."""


def test_writes_after_a_restart_change_one_object_only(fresh_server):
    srv = fresh_server(https=False, unix=False)
    x = srv.session().xenapi
    vms = [x.VM.create({"name_label": f"compact {i}", "name_description": "same"}) for i in range(3)]
    expect = {vm: x.VM.get_record(vm) for vm in vms}
    srv.stop()

    srv = fresh_server(https=False, unix=False)
    x = srv.session().xenapi
    one, two, three = vms
    x.VM.add_to_other_config(one, "k", "v")
    x.VM.add_tags(two, "blue")
    x.VM.set_platform(three, {"acpi": "1"})
    x.VM.set_name_description(one, "changed")
    expect[one]["other_config"]["k"] = "v"
    expect[one]["name_description"] = "changed"
    expect[two]["tags"] = ["blue"]
    expect[three]["platform"] = {"acpi": "1"}
    fields = ("other_config", "tags", "platform", "name_description", "blocked_operations")

    def check(x):
        for vm, before in expect.items():
            rec = x.VM.get_record(vm)
            assert {f: rec[f] for f in fields} == {f: before[f] for f in fields}, vm
        # every other VM (the control domain, templates) kept its own maps and sets
        for vm, rec in x.VM.get_all_records().items():
            if vm not in expect:
                assert "k" not in rec["other_config"] and "blue" not in rec["tags"], vm

    check(x)
    srv.stop()
    check(fresh_server(https=False, unix=False).session().xenapi)
