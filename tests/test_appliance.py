"""VM appliances (pyxapi/api/appliance.py): start and shut down their VMs in VM.order, the
partial failures, the DR questions, through XenAPI.py against a real server."""
import pytest

from tests.test_vm_lifecycle import failure, new_vm

NULL = "OpaqueRef:NULL"


@pytest.fixture
def appliance(xapi):
    x = xapi
    app = x.VM_appliance.create({"name_label": "app", "name_description": ""})
    vms = []
    for i, order in enumerate((2, 0, 1)):
        vm = new_vm(x, f"app-vm-{i}")
        x.VM.set_order(vm, str(order))
        x.VM.set_appliance(vm, app)
        vms.append(vm)
    yield app, vms
    for vm in vms:
        if x.VM.get_power_state(vm) != "Halted":
            x.VM.hard_shutdown(vm)
        for vbd in x.VM.get_VBDs(vm):
            vdi = x.VBD.get_VDI(vbd)
            if vdi != NULL and x.VBD.get_type(vbd) == "Disk":
                x.VDI.destroy(vdi)
        x.VM.destroy(vm)
    x.VM_appliance.destroy(app)


def start_times(x, vms):
    return [x.VM_metrics.get_start_time(x.VM.get_metrics(vm)).value for vm in vms]


def test_start_and_shutdowns(xapi, appliance):
    x = xapi
    app, vms = appliance
    assert set(x.VM_appliance.get_VMs(app)) == set(vms)
    assert "start" in x.VM_appliance.get_allowed_operations(app)
    assert failure(x.VM_appliance.clean_shutdown, app) == [
        "OPERATION_NOT_ALLOWED", "There are no running VMs in this appliance."]
    x.VM_appliance.start(app, False)
    assert all(x.VM.get_power_state(vm) == "Running" for vm in vms)
    ops = x.VM_appliance.get_allowed_operations(app)
    assert "start" not in ops and "clean_shutdown" in ops
    assert x.VM_appliance.get_current_operations(app) == {}
    assert failure(x.VM_appliance.start, app, False) == [
        "OPERATION_NOT_ALLOWED", "There are no halted VMs in this appliance."]
    x.VM_appliance.clean_shutdown(app)
    assert all(x.VM.get_power_state(vm) == "Halted" for vm in vms)
    x.VM_appliance.start(app, True)
    assert all(x.VM.get_power_state(vm) == "Paused" for vm in vms)
    x.VM_appliance.hard_shutdown(app)
    assert all(x.VM.get_power_state(vm) == "Halted" for vm in vms)
    assert failure(x.VM_appliance.shutdown, app) == [
        "OPERATION_NOT_ALLOWED", "All VMs in this appliance are halted."]
    x.VM.start(vms[1], False, False)
    x.VM_appliance.shutdown(app)
    assert all(x.VM.get_power_state(vm) == "Halted" for vm in vms)


def test_start_goes_by_order(xapi, appliance):
    """Lower order first: order 0 (vms[1]) then 1 (vms[2]) then 2 (vms[0]); the VMs' domids
    are given in the order the domains were built."""
    x = xapi
    app, vms = appliance
    x.VM_appliance.start(app, False)
    domids = [int(x.VM.get_domid(vm)) for vm in (vms[1], vms[2], vms[0])]
    assert domids == sorted(domids)
    x.VM_appliance.hard_shutdown(app)


def test_partial_failure_names_the_vms(xapi, appliance):
    x = xapi
    app, vms = appliance
    x.VM.add_to_blocked_operations(vms[2], "start", "maintenance")
    try:
        assert failure(x.VM_appliance.start, app, False) == [
            "OPERATION_PARTIALLY_FAILED", "VM_appliance.start", vms[2]]
        assert x.VM.get_power_state(vms[0]) == "Running"
        assert x.VM.get_power_state(vms[1]) == "Running"
        assert x.VM.get_power_state(vms[2]) == "Halted"
        assert x.VM_appliance.get_current_operations(app) == {}
    finally:
        x.VM.remove_from_blocked_operations(vms[2], "start")
    x.VM_appliance.hard_shutdown(app)


def test_empty_appliance_and_assignment_rules(xapi):
    x = xapi
    app = x.VM_appliance.create({"name_label": "empty", "name_description": ""})
    assert failure(x.VM_appliance.start, app, False) == [
        "OPERATION_NOT_ALLOWED", "Appliance has no VMs."]
    assert x.VM_appliance.get_allowed_operations(app) == []
    tmpl = [v for v in x.VM.get_all() if x.VM.get_is_a_template(v)][0]
    assert failure(x.VM.set_appliance, tmpl, app) == [
        "OPERATION_NOT_ALLOWED",
        "Control domains, templates and snapshots cannot be assigned to appliances."]
    assert x.VM.get_appliance(tmpl) == NULL
    x.VM_appliance.destroy(app)


def test_recovery(xapi, server, appliance):
    x = xapi
    app, vms = appliance
    sid = server.session()._session
    assert x.VM_appliance.get_SRs_required_for_recovery(app, sid) == []
    x.VM_appliance.assert_can_be_recovered(app, sid)
    err = failure(x.VM_appliance.recover, app, sid, False)
    assert err[0] == "VM_TO_IMPORT_IS_NOT_NEWER_VERSION" and err[1] in vms
    x.VM_appliance.recover(app, sid, True)
    assert set(x.VM_appliance.get_VMs(app)) == set(vms)


def test_destroying_its_last_vm_updates_the_appliance(xapi):
    x = xapi
    app = x.VM_appliance.create({"name_label": "one", "name_description": ""})
    vm = new_vm(x, "app-only")
    x.VM.set_appliance(vm, app)
    assert x.VM_appliance.get_allowed_operations(app) == ["start"]
    vdis = [x.VBD.get_VDI(b) for b in x.VM.get_VBDs(vm) if x.VBD.get_type(b) == "Disk"]
    x.VM.destroy(vm)
    assert x.VM_appliance.get_allowed_operations(app) == []
    for vdi in vdis:
        x.VDI.destroy(vdi)
    x.VM_appliance.destroy(app)
