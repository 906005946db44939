"""The alerts the server raises by itself (pyxapi/api/alerts.py), as xapi does after an API
operation on a VM succeeded: name, priority, class, object and body exactly as xapi writes
them, listed by message.get_all_records and delivered by event.from on class "message";
none for a failed operation, none for what a guest does by itself."""
import pytest

from tests.test_vm_extras import dest
from tests.test_vm_lifecycle import GiB, failure, new_vm, vm_args, wait_for

EPOCH = "19700101T00:00:00Z"


def alerts(x, vm):
    """(name, priority, body) of the messages about ``vm``, oldest first."""
    got = x.message.get("VM", x.VM.get_uuid(vm), EPOCH)  # newest first
    return [(m["name"], int(m["priority"]), m["body"]) for m in reversed(list(got.values()))]


def head(x, vm):
    return f"VM '{x.VM.get_name_label(vm)}' (uuid: {x.VM.get_uuid(vm)}) "


def on_host(x):
    host = x.host.get_all()[0]
    return f"{x.host.get_name_label(host)} (uuid: {x.host.get_uuid(host)})"


def ready(x, vm):
    """The guest agent has reported: clean operations and migration are offered."""
    wait_for(lambda: "clean_shutdown" in x.VM.get_allowed_operations(vm))


def destroy(x, vm):
    if x.VM.get_power_state(vm) != "Halted":
        x.VM.hard_shutdown(vm)
    for vbd in x.VM.get_VBDs(vm):
        if x.VBD.get_type(vbd) == "Disk":
            x.VDI.destroy(x.VBD.get_VDI(vbd))
    x.VM.destroy(vm)


@pytest.fixture
def vm(xapi):
    ref = new_vm(xapi, "alerted")
    yield ref
    destroy(xapi, ref)


def test_start_raises_vm_started_listed_and_delivered_by_event_from(xapi, vm):
    x = xapi
    token = getattr(x.event, "from")(["message"], "", 0.0)["token"]
    x.VM.start(vm, False, False)
    body = head(x, vm) + "started on host: " + on_host(x)
    assert alerts(x, vm) == [("VM_STARTED", 5, body)]
    (ref, rec), = [(r, m) for r, m in x.message.get_all_records().items()
                   if m["obj_uuid"] == x.VM.get_uuid(vm)]
    assert rec["cls"] == "VM" and rec["name"] == "VM_STARTED" and rec["body"] == body
    events = getattr(x.event, "from")(["message"], token, 5.0)["events"]
    assert [(e["operation"], e["ref"], e["snapshot"]["body"]) for e in events] == [
        ("add", ref, body)]


def test_every_power_operation_raises_its_alert(xapi, vm):
    x = xapi
    x.VM.start(vm, False, False)
    ready(x, vm)
    x.VM.pause(vm)
    x.VM.unpause(vm)
    x.VM.suspend(vm)
    x.VM.resume(vm, False, False)
    ready(x, vm)
    x.VM.clean_reboot(vm)
    x.VM.hard_reboot(vm)
    ready(x, vm)
    x.VM.clean_shutdown(vm)
    x.VM.start(vm, True, False)  # paused: VM.shutdown falls back to a hard one, same alert
    x.VM.shutdown(vm)
    x.Async.VM.start(vm, False, False)  # an Async call raises the same
    wait_for(lambda: x.VM.get_power_state(vm) == "Running")
    x.VM.hard_shutdown(vm)
    h, host = head(x, vm), on_host(x)
    assert alerts(x, vm) == [
        ("VM_STARTED", 5, h + "started on host: " + host),
        ("VM_PAUSED", 5, h + "paused"),
        ("VM_UNPAUSED", 5, h + "unpaused"),
        ("VM_SUSPENDED", 5, h + "suspended"),
        ("VM_RESUMED", 5, h + "resumed on host: " + host),
        ("VM_REBOOTED", 5, h + "rebooted cleanly"),
        ("VM_REBOOTED", 5, h + "rebooted forcibly"),
        ("VM_SHUTDOWN", 5, h + "shutdown"),
        ("VM_STARTED", 5, h + "started on host: " + host),
        ("VM_SHUTDOWN", 5, h + "shutdown"),
        ("VM_STARTED", 5, h + "started on host: " + host),
        ("VM_SHUTDOWN", 5, h + "shutdown forcibly"),
    ]


def test_a_failed_operation_raises_none(xapi, vm):
    x = xapi
    huge = x.VM.create(vm_args("alerts-huge", 4096 * GiB))
    try:
        assert failure(x.VM.start, huge, False, False)[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
        assert alerts(x, huge) == []
    finally:
        x.VM.destroy(huge)
    assert failure(x.VM.clean_shutdown, vm)[0] == "VM_BAD_POWER_STATE"
    x.VM.set_blocked_operations(vm, {"start": "no"})
    assert failure(x.VM.start, vm, False, False)[0] == "OPERATION_BLOCKED"
    x.VM.set_blocked_operations(vm, {})
    assert alerts(x, vm) == []


def test_a_guest_that_stops_by_itself_raises_none(xapi, vm):
    """xapi alerts on API operations only: a power state the guest changes is not one."""
    x = xapi
    x.VM.start(vm, False, False)
    x.VM.set_actions_after_shutdown(vm, "destroy")
    x.VM.send_sysrq(vm, "o")  # power off inside the guest
    wait_for(lambda: x.VM.get_power_state(vm) == "Halted")
    assert [a[0] for a in alerts(x, vm)] == ["VM_STARTED"]


def test_snapshot_checkpoint_and_revert(xapi, vm):
    x = xapi
    x.VM.start(vm, False, False)
    ready(x, vm)
    snap = x.VM.snapshot(vm, "before {it}", [])
    cp = x.VM.checkpoint(vm, "with memory")
    x.VM.revert(snap)  # the running VM is shut down first, as by VM.hard_shutdown
    h = head(x, vm)
    assert alerts(x, vm) == [
        ("VM_STARTED", 5, h + "started on host: " + on_host(x)),
        ("VM_SNAPSHOTTED", 5, h + "snapshotted, snapshot name: before {it}"),
        ("VM_CHECKPOINTED", 5, h + "checkpointed, snapshot name: with memory"),
        ("VM_SHUTDOWN", 5, h + "shutdown forcibly"),
        ("VM_SNAPSHOT_REVERTED", 5,
         h + f"reverted to snapshot: before {{it}} (uuid {x.VM.get_uuid(snap)})"),
    ]
    # snapshots themselves, and clones, get no alert (xapi raises none for a clone)
    copy = x.VM.clone(vm, "alerts-clone")
    try:
        assert alerts(x, copy) == [] and alerts(x, snap) == [] and alerts(x, cp) == []
        assert [a[0] for a in alerts(x, vm)].count("VM_CLONED") == 0
    finally:
        destroy(x, copy)
        for s in (snap, cp):
            destroy(x, s)


def test_migrations_within_the_pool(xapi, vm):
    x = xapi
    host = x.host.get_all()[0]
    moved = head(x, vm) + "migrated from host '{0}' (uuid: {1}) to host '{0}' (uuid: {1})".format(
        x.host.get_name_label(host), x.host.get_uuid(host))
    x.VM.migrate_send(vm, dest(x), False, {}, {}, {}, {}, {})  # halted: not announced
    assert alerts(x, vm) == []
    x.VM.start(vm, False, False)
    ready(x, vm)
    x.VM.pool_migrate(vm, host, {})
    x.VM.migrate_send(vm, dest(x), True, {}, {}, {}, {}, {})
    assert alerts(x, vm)[1:] == [("VM_MIGRATED", 5, moved), ("VM_MIGRATED", 5, moved)]


def test_appliance_operations_raise_each_vms_alert(xapi, vm):
    """VM_appliance.start/shutdown call VM.start/hard_shutdown for each VM, as xapi does."""
    x = xapi
    app = x.VM_appliance.create({"name_label": "alerts-app", "name_description": ""})
    try:
        x.VM.set_appliance(vm, app)
        x.VM_appliance.start(app, False)
        wait_for(lambda: x.VM.get_power_state(vm) == "Running")
        x.VM_appliance.hard_shutdown(app)
        wait_for(lambda: x.VM.get_power_state(vm) == "Halted")
        assert [a[0] for a in alerts(x, vm)] == ["VM_STARTED", "VM_SHUTDOWN"]
    finally:
        x.VM.set_appliance(vm, "OpaqueRef:NULL")
        x.VM_appliance.destroy(app)


def test_an_alert_that_cannot_be_made_does_not_fail_the_operation(server, xapi, vm):
    """A name XML cannot carry makes no message (xapi's create refuses it and the operation
    ignores that): the VM starts all the same.  Only JSON-RPC can carry such a name."""
    x = xapi
    name = x.VM.get_name_label(vm)
    s = server.session("http")
    try:
        sid = s._session
        assert "error" not in server.jsonrpc("VM.set_name_label", [sid, vm, "bell\u0007"])
        reply = server.jsonrpc("VM.start", [sid, vm, False, False])
        assert "error" not in reply
        assert server.jsonrpc("VM.get_power_state", [sid, vm])["result"] == "Running"
        assert alerts(x, vm) == []
    finally:
        server.jsonrpc("VM.set_name_label", [sid, vm, name])
        s.xenapi.session.logout()
