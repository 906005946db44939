"""OpaqueRef:NULL as a parameter: refused with HANDLE_INVALID [class, OpaqueRef:NULL] in one
place (the dispatcher), except on the parameters where the call means "none"
(pyxapi/model/nulls.py); those still work."""
import pytest

from pyxapi.model.nulls import accepts_null
from pyxapi.model.types import Enum, Map, Prim, Record, Ref, Set
from tests.helpers import NULL, failure
from tests.server import PASSWORD, RunningServer
from tests.test_fuzz import MODEL, Fast, json_reply, snapshot
from tests.test_vm_lifecycle import new_vm

# What takes NULL, as xapi takes it: optional Ref parameters (NULL is their default), the
# generated setters of Ref fields, and the hand-written calls whose implementation means "none".
TAKES_NULL = {
    "host.evacuate:network", "VDI.copy:sr", "VDI.copy:base_vdi", "VDI.copy:into_vdi",
    "VDI.introduce:metadata_of_pool", "VDI.introduce:snapshot_of", "VGPU.create:type",
    "pool.set_default_SR:value", "pool.set_suspend_image_SR:value", "pool.set_crash_dump_SR:value",
    "host.set_suspend_image_sr:value", "host.set_crash_dump_sr:value",
    "VM.set_affinity:value", "VM.set_suspend_SR:value",
    "VM.copy:sr", "VM.set_appliance:value", "VM.set_snapshot_schedule:value",
    "PIF.db_introduce:bond_slave_of", "PIF.db_introduce:VLAN_master_of",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = RunningServer(tmp_path_factory.mktemp("refs"), https=False, unix=False)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rpc(srv):
    fast = Fast(srv.http)
    yield fast
    fast.conn.close()


@pytest.fixture(scope="module")
def x(srv):
    session = srv.session("http")
    yield session.xenapi
    session.xenapi.session.logout()


def call(rpc, method, params):
    return json_reply(rpc.post("/jsonrpc", json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                 "params": params}))


def plausible(t, refs):
    """A well-typed value; a ref names a live object of its class where there is one."""
    match t:
        case Prim("int"):
            return 0
        case Prim("float"):
            return 0.0
        case Prim("bool"):
            return False
        case Prim("datetime"):
            return "20260101T00:00:00Z"
        case Enum(_, values):
            return sorted(values)[0]
        case Ref(cls):
            return (refs.get(cls) or [NULL])[0]
        case Set():
            return []
        case Map() | Record():
            return {}
    return ""


def ref_params(msg):
    return [(i, p) for i, p in enumerate(msg.params[1:]) if isinstance(p.type, Ref)]


def test_null_is_handle_invalid_wherever_the_call_does_not_take_it(rpc):
    root = call(rpc, "session.login_with_password", ["root", PASSWORD])["result"]
    refs = {c.name: call(rpc, f"{c.name}.get_all", [root]).get("result", [])
            for c in MODEL.classes.values() if "get_all" in c.messages}
    refs["session"] = [root]
    before = snapshot(rpc, root)
    tasks = call(rpc, "task.get_all", [root])["result"]
    taken, refused = set(), 0
    for msg in (m for c in MODEL.classes.values() for m in c.messages.values()):
        if msg.state == "Removed_s" or not msg.takes_session:
            continue
        for i, p in ref_params(msg):
            if accepts_null(MODEL, msg, p):
                taken.add(f"{msg.wire_name}:{p.name}")
                continue
            params = [plausible(q.type, refs) for q in msg.params[1:]]
            params[i] = NULL
            # the first NULL the call does not take is the one named (the others are live refs,
            # or NULL where a class has no object yet)
            first = next(q for j, q in ref_params(msg) if params[j] == NULL and not accepts_null(MODEL, msg, q))
            for method in (msg.wire_name, "Async." + msg.wire_name):
                err = call(rpc, method, [root, *params]).get("error") or {}
                if method.startswith("Async.") and err.get("message") == "MESSAGE_METHOD_UNKNOWN":
                    continue  # no Async form (generated accessors, session, task, event)
                assert (err.get("message"), err.get("data")) == ("HANDLE_INVALID", [first.type.cls, NULL]), \
                    (method, p.name, err)
                refused += 1
    assert refused > 2000
    assert taken == TAKES_NULL
    # refused before any handler ran: nothing changed, no task was made for the Async calls
    assert snapshot(rpc, root) == before
    assert call(rpc, "task.get_all", [root])["result"] == tasks


def test_null_where_it_is_taken_means_none(x):
    vm = new_vm(x, "null-refs")
    host, pool = x.host.get_all()[0], x.pool.get_all()[0]
    disk = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    sr = x.VDI.get_SR(disk)

    # VM.copy with no SR: each disk lands in the SR its original is in
    twin = x.VM.copy(vm, "null-refs twin", NULL)
    twin_disk = x.VBD.get_VDI(x.VM.get_VBDs(twin)[0])
    assert twin_disk != disk and x.VDI.get_SR(twin_disk) == sr

    # generated setters of Ref fields: NULL clears the field
    x.VM.set_affinity(vm, host)
    assert x.VM.get_affinity(vm) == host
    x.VM.set_affinity(vm, NULL)
    assert x.VM.get_affinity(vm) == NULL
    default_sr = x.pool.get_default_SR(pool)
    x.pool.set_default_SR(pool, NULL)
    assert x.pool.get_default_SR(pool) == NULL
    x.pool.set_default_SR(pool, default_sr)

    # hand-written setters that take NULL for "none"
    app = x.VM_appliance.create({"name_label": "null-refs app"})
    x.VM.set_appliance(vm, app)
    assert x.VM_appliance.get_VMs(app) == [vm]
    x.VM.set_appliance(vm, NULL)
    assert x.VM.get_appliance(vm) == NULL and x.VM_appliance.get_VMs(app) == []
    x.VM.set_snapshot_schedule(vm, NULL)
    assert x.VM.get_snapshot_schedule(vm) == NULL

    # an optional ref sent as NULL is the same as leaving it out
    copy = x.VDI.copy(disk, sr, NULL, NULL)
    assert x.VDI.get_SR(copy) == sr and x.VDI.get_virtual_size(copy) == x.VDI.get_virtual_size(disk)

    # and where NULL is refused, the refusal names the class
    assert failure(x.VM.set_suspend_VDI, vm, NULL) == ["HANDLE_INVALID", "VDI", NULL]
    assert failure(x.VM.clone, NULL, "nothing") == ["HANDLE_INVALID", "VM", NULL]
    assert failure(x.VM.start_on, vm, NULL, False, False) == ["HANDLE_INVALID", "host", NULL]
    assert x.VM.get_power_state(vm) == "Halted"
