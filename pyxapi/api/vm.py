"""VM life cycle: xapi's power-state machine over the backend interface.

Every operation on a VM is checked as xapi's Xapi_vm_lifecycle does (blocked, power state,
concurrent operations, templates, snapshots, control domain, guest features), runs with an
entry in VM.current_operations (task ref -> operation) and leaves allowed_operations current.
The backend is called with the VM's uuid; what it reports (domid, metrics, guest agent data,
free memory) is written back to VM, VM_metrics, VM_guest_metrics, VBDs and VIFs.

Copies (clone/copy/snapshot/checkpoint/revert/provision) are in vm_copy.py, memory/VCPU
settings and read-only questions in vm_config.py; they share the helpers here.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from ..db.store import NULL, journal, new_ref, now
from ..errors import ApiError
from ..model.values import EPOCH
from . import blob, devices, network, storage
from .alerts import vm_alert
from .bootstrap import on_loop_start_hook
from .generic import create_from_record, operations_in_progress, set_allowed_operations
from .registry import action

log = logging.getLogger("pyxapi.vm")

LIVE = ("Running", "Paused")
_ALL = ("Halted", "Paused", "Suspended", "Running")


def _states(table: dict[str, tuple], ops: str, states: tuple) -> None:
    for op in ops.split():
        table[op] = states


# xapi's allowed_power_states (states in its order: Halted, Paused, Suspended, Running)
POWER_STATES: dict[str, tuple] = {}
_states(POWER_STATES, "changing_shadow_memory make_into_template provision start start_on",
        ("Halted",))
_states(POWER_STATES, "unpause", ("Paused",))
_states(POWER_STATES, "csvm resume resume_on", ("Suspended",))
_states(POWER_STATES, "awaiting_memory_live call_plugin clean_reboot clean_shutdown "
        "changing_memory_live changing_shadow_memory_live changing_VCPUs_live data_source_op "
        "pause pool_migrate send_sysrq send_trigger snapshot_with_quiesce suspend", ("Running",))
_states(POWER_STATES, "changing_dynamic_range", ("Halted", "Running"))
_states(POWER_STATES, "create_template destroy export", ("Halted", "Suspended"))
_states(POWER_STATES, "hard_reboot", ("Paused", "Running"))
_states(POWER_STATES, "checkpoint get_boot_record shutdown hard_shutdown",
        ("Paused", "Suspended", "Running"))
_states(POWER_STATES, "migrate_send", ("Halted", "Suspended", "Running"))
_states(POWER_STATES, "import", ())

# what a template / a snapshot still allows
TEMPLATE_OPS = frozenset("changing_dynamic_range changing_static_range changing_memory_limits "
                         "changing_shadow_memory changing_VCPUs clone copy export "
                         "metadata_export provision".split())
SNAPSHOT_OPS = frozenset("revert clone copy export destroy hard_shutdown metadata_export".split())
CONTROL_DOMAIN_OPS = frozenset("data_source_op changing_memory_live awaiting_memory_live "
                               "metadata_export changing_dynamic_range changing_memory_limits "
                               "changing_static_range start start_on changing_VCPUs "
                               "destroy".split())
# the operations VM.allowed_operations lists (xapi's update_allowed_operations)
LISTED_OPS = ("snapshot copy clone revert checkpoint snapshot_with_quiesce start start_on pause "
              "unpause clean_shutdown clean_reboot hard_shutdown hard_reboot suspend resume "
              "resume_on export destroy provision changing_VCPUs_live pool_migrate migrate_send "
              "make_into_template changing_static_range changing_shadow_memory "
              "changing_dynamic_range").split()
# operations that may run together (xapi's is_allowed_concurrently)
_TOGETHER = (frozenset({"clone", "copy", "export"}), frozenset({"snapshot", "checkpoint"}),
             frozenset({"get_boot_record"}))


# ---------------------------------------------------------------------------------------------
# the operation checks
# ---------------------------------------------------------------------------------------------

def power_states(store, row: dict, op: str) -> tuple:
    states = POWER_STATES.get(op, _ALL)
    if op in ("changing_VCPUs", "changing_static_range", "changing_memory_limits"):
        states = ("Halted", "Running") if row["is_control_domain"] else ("Halted",)
    elif op in ("clone", "copy"):
        pool = store.get("pool", store.refs("pool")[0]) if store.refs("pool") else {}
        suspended_ok = (row["is_a_snapshot"]
                        or pool.get("other_config", {}).get("allow_clone_suspended_vm") == "true")
        states = ("Halted", "Suspended") if suspended_ok else ("Halted",)
    return states


def _concurrent_ok(op: str, current: list[str]) -> bool:
    if op == "hard_shutdown":
        return op not in current
    if op == "hard_reboot":
        return not any(o in ("hard_shutdown", "hard_reboot") for o in current)
    return any(op in group and all(o in group for o in current) for group in _TOGETHER)


def is_default_template(row: dict) -> bool:
    return row["is_default_template"] or row["other_config"].get("default_template") in (
        "true", "1")


def guest_metrics(store, row: dict) -> dict | None:
    gm = row["guest_metrics"]
    return store.get("VM_guest_metrics", gm) if store.exists("VM_guest_metrics", gm) else None


def _lacks_feature(store, row: dict, op: str, strict: bool) -> bool:
    """An HVM guest without PV drivers must offer the feature the operation needs."""
    if row["power_state"] != "Running":
        return False
    metrics = row["metrics"]
    if store.exists("VM_metrics", metrics) and not store.get("VM_metrics", metrics)["hvm"]:
        return False  # PV guests offer everything
    gm = guest_metrics(store, row)
    if gm is not None and gm["PV_drivers_version"].get("major"):
        return False  # full PV drivers imply all features
    other = gm["other"] if gm is not None else {}

    def lack(feature):
        return other.get(feature) != "1"

    if op == "clean_shutdown":
        return strict and lack("feature-shutdown") and lack("feature-poweroff")
    if op == "clean_reboot":
        return strict and lack("feature-shutdown") and lack("feature-reboot")
    if op == "changing_VCPUs_live":
        return lack("feature-vcpu-hotplug")
    if op in ("suspend", "checkpoint", "pool_migrate", "migrate_send"):
        return strict and lack("feature-suspend")
    return False


def operation_error(store, vm: str, op: str, strict: bool = False) -> ApiError | None:
    """The first reason ``op`` cannot run on ``vm`` now, in xapi's order; None if it can."""
    why = _why_not(store, vm, op, strict)
    return None if why is None else ApiError(*why)


def _why_not(store, vm: str, op: str, strict: bool) -> tuple | None:
    """operation_error's (code, *params), without building an exception: computing
    allowed_operations asks this for every operation of every VM at start."""
    row = store.get("VM", vm)
    if op in row["blocked_operations"]:
        return ("OPERATION_BLOCKED", vm, row["blocked_operations"][op])
    state = row["power_state"]
    states = power_states(store, row, op)
    if state not in states:
        return ("VM_BAD_POWER_STATE", vm, ", ".join(states), state)
    current = row["current_operations"]
    if current and not _concurrent_ok(op, list(current.values())):
        task, running = next(iter(current.items()))
        return ("OTHER_OPERATION_IN_PROGRESS", "VM", vm, running, task)
    if row["is_a_template"] and not row["is_a_snapshot"]:
        if not (op in TEMPLATE_OPS or (op == "destroy" and not is_default_template(row))):
            return ("VM_IS_TEMPLATE", vm, op)
    if row["is_a_snapshot"] and op not in SNAPSHOT_OPS:
        return ("VM_IS_SNAPSHOT", vm, op)
    if op == "provision" and not row["is_a_template"]:
        return ("PROVISION_ONLY_ALLOWED_ON_TEMPLATE",)
    if op == "revert" and not row["is_a_snapshot"]:
        return ("REVERT_ONLY_ALLOWED_ON_SNAPSHOT",)
    if row["is_control_domain"]:
        if op in ("changing_VCPUs", "destroy") and row["domid"] == 0:
            return ("OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0")
        if op not in CONTROL_DOMAIN_OPS:
            return ("OPERATION_NOT_ALLOWED",
                    "This operation is not allowed on a control domain")
    if _lacks_feature(store, row, op, strict):
        return ("VM_LACKS_FEATURE", vm)
    if op == "snapshot_with_quiesce":
        gm = guest_metrics(store, row)
        other = gm["other"] if gm is not None else {}
        if "feature-quiesce" not in other and "feature-snapshot" not in other:
            return ("VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED", vm)
    return None


def assert_operation(store, vm: str, op: str) -> None:
    err = operation_error(store, vm, op)
    if err is not None:
        raise err


def update_allowed_operations(store, vm: str) -> None:
    if not store.exists("VM", vm):
        return
    set_allowed_operations(store, "VM", vm, [op for op in LISTED_OPS
                                            if _why_not(store, vm, op, True) is None])


@contextlib.asynccontextmanager
async def vm_operation(ctx, vm: str, op: str):
    """Check ``op``, record it in current_operations for as long as it runs (failure and
    cancellation included), and keep allowed_operations current."""
    assert_operation(ctx.store, vm, op)
    with operations_in_progress(ctx, ("VM", vm, op, update_allowed_operations)):
        yield


async def settle(coro):
    """Run what must follow a completed backend operation to its end: cancelling it now would
    leave the store behind the machine, so a cancel arriving here is too late (as in xapi)."""
    job = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        if job.cancelled():
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return await job


# ---------------------------------------------------------------------------------------------
# what the backend is told, and what it says back
# ---------------------------------------------------------------------------------------------

def os_hint(row: dict) -> str:
    return (row["reference_label"] or row["other_config"].get("base_template_name")
            or row["name_label"])


def domain_spec(store, vm: str) -> dict:
    row = store.get("VM", vm)
    boot = row["HVM_boot_params"]
    return {
        "name": row["name_label"],
        "memory": row["memory_dynamic_max"],
        "memory_static_max": row["memory_static_max"],
        "vcpus": row["VCPUs_at_startup"],
        "vcpus_max": row["VCPUs_max"],
        "firmware": boot.get("firmware", "bios"),
        "boot_order": boot.get("order", "cd"),
        "platform": dict(row["platform"]),
        "disks": storage.disk_specs(store, vm),
        "nics": network.nic_specs(store, vm),
        "os_hint": os_hint(row),
        # direct kernel boot (the QEMU backend boots it; the simulator ignores it)
        "kernel": {"kernel": row["PV_kernel"], "ramdisk": row["PV_ramdisk"],
                   "args": row["PV_args"]} if row["PV_kernel"] else {},
    }


async def domain(ctx, vm: str, op: str, *args, **kw):
    """backend.domain_<op> for the VM; its errors name the VM by ref, as the API does."""
    uuid = ctx.store.get("VM", vm)["uuid"]
    try:
        return await getattr(ctx.backend, "domain_" + op)(uuid, *args, **kw)
    except ApiError as e:
        if uuid not in e.params:
            raise
        raise ApiError(e.code, *[vm if p == uuid else p for p in e.params]) from None


def memory_needed(backend, row: dict) -> int:
    """What a domain of this VM costs the host: its memory target plus the overhead."""
    return row["memory_dynamic_max"] + backend.memory_overhead(row["memory_static_max"],
                                                               row["VCPUs_max"])


def metrics_ref(store, vm: str) -> str:
    """The VM's VM_metrics, made if missing (VMs created outside VM.create have none)."""
    ref = store.get("VM", vm)["metrics"]
    if not store.exists("VM_metrics", ref):
        ref = store.create("VM_metrics", {"state": [],
                                          "last_updated": now()})
        store.update("VM", vm, {"metrics": ref})
    return ref


async def refresh_metrics(ctx, vm: str) -> None:
    """VM_metrics of a live VM from the backend."""
    store = ctx.store
    m = await domain(ctx, vm, "metrics")
    store.update("VM_metrics", metrics_ref(store, vm), {
        "memory_actual": m["memory_actual"],
        "VCPUs_number": m["vcpus_number"],
        "VCPUs_CPU": {str(k): int(v) for k, v in m.get("vcpus_cpu", {}).items()},
        "VCPUs_params": dict(m.get("vcpus_params", {})),
        "VCPUs_flags": {str(k): list(v) for k, v in m.get("vcpus_flags", {}).items()},
        "state": list(m.get("state", [])),
        "start_time": m.get("start_time") or now(),
        "hvm": bool(m.get("hvm")),
        "nested_virt": bool(m.get("nested_virt")),
        "nomigrate": bool(m.get("nomigrate")),
        "current_domain_type": m.get("current_domain_type", "hvm"),
        "last_updated": now(),
    })


_GM_FIELDS = ("os_version", "netbios_name", "PV_drivers_version", "PV_drivers_up_to_date",
              "networks", "other", "live", "can_use_hotplug_vbd", "can_use_hotplug_vif",
              "PV_drivers_detected")


async def refresh_guest_metrics(ctx, vm: str) -> None:
    """VM_guest_metrics from what the guest agent reported (nothing until it has)."""
    store = ctx.store
    report = await domain(ctx, vm, "guest_metrics")
    if report is None:
        return
    fields = {k: report[k] for k in _GM_FIELDS if k in report}
    fields["last_updated"] = report.get("last_updated") or now()
    gm = store.get("VM", vm)["guest_metrics"]
    if store.exists("VM_guest_metrics", gm):
        store.update("VM_guest_metrics", gm, fields)
    else:
        store.update("VM", vm, {"guest_metrics": store.create("VM_guest_metrics", fields)})
    update_allowed_operations(store, vm)


def delete_guest_metrics(store, vm: str) -> None:
    gm = store.get("VM", vm)["guest_metrics"]
    if store.exists("VM_guest_metrics", gm):
        store.destroy("VM_guest_metrics", gm)
    store.update("VM", vm, {"guest_metrics": NULL})


def _devices_attached(store, vm: str, attached: bool | None) -> None:
    storage.set_vbds_attached(store, vm, attached)
    network.set_vifs_attached(store, vm, attached)
    devices.follow_vm(store, vm, attached)


async def set_live(ctx, vm: str, domid: int, state: str) -> None:
    """The VM has a domain now (started, resumed, rebooted)."""
    store = ctx.store
    row = store.get("VM", vm)
    store.update("VM", vm, {
        "power_state": state, "domid": domid, "resident_on": ctx.app.host_ref,
        "scheduled_to_be_resident_on": NULL,
        "memory_target": row["memory_dynamic_max"],
        "memory_overhead": ctx.backend.memory_overhead(row["memory_static_max"], row["VCPUs_max"]),
    })
    _devices_attached(store, vm, True)
    await refresh_metrics(ctx, vm)
    await refresh_guest_metrics(ctx, vm)
    await _open_console(ctx, vm)
    update_allowed_operations(store, vm)


async def _open_console(ctx, vm: str) -> None:
    """A running VM has an `rfb` console whose location names the backend's VNC endpoint."""
    _close_consoles(ctx.store, vm)
    info = await domain(ctx, vm, "console")
    if not info:
        return
    if info.get("path"):
        location = f"unix://{info['path']}"
    else:
        location = f"vnc://{info.get('host', '127.0.0.1')}:{info['port']}"
    ctx.store.create("console", {"protocol": info.get("protocol", "rfb"), "location": location,
                                 "VM": vm})


def _close_consoles(store, vm: str) -> None:
    for console in store.field("VM", vm, "consoles"):
        store.destroy("console", console)


def force_state_reset(ctx, vm: str, state: str) -> None:
    """xapi's force_state_reset: the VM has no domain (Halted or Suspended)."""
    store = ctx.store
    store.update("VM", vm, {"power_state": state, "domid": -1, "resident_on": NULL,
                            "scheduled_to_be_resident_on": NULL})
    if state == "Halted":
        store.update("VM", vm, {"requires_reboot": False})
    _devices_attached(store, vm, False)  # no domain, no devices
    _close_consoles(store, vm)
    metrics = store.get("VM", vm)["metrics"]
    if store.exists("VM_metrics", metrics):
        store.update("VM_metrics", metrics, {"memory_actual": 0, "VCPUs_number": 0, "state": [],
                                             "VCPUs_CPU": {}, "VCPUs_flags": {},
                                             "last_updated": now()})
    gm = guest_metrics(store, store.get("VM", vm))
    if gm is not None and gm["live"]:
        store.update("VM_guest_metrics", store.get("VM", vm)["guest_metrics"], {"live": False})
    update_allowed_operations(store, vm)


# ---------------------------------------------------------------------------------------------
# can it boot here?
# ---------------------------------------------------------------------------------------------

def validate_basic_parameters(row: dict) -> None:
    vmax, vstart = row["VCPUs_max"], row["VCPUs_at_startup"]
    if vmax < 1:
        raise ApiError("INVALID_VALUE", "VCPUs_max", vmax)
    if vstart < 1:
        raise ApiError("INVALID_VALUE", "VCPUs-at-startup", vstart)
    if vstart > vmax:
        raise ApiError("VALUE_NOT_SUPPORTED", "VCPUs-at-startup", vstart,
                       "value greater than VCPUs-max")
    # the constraints must at least be coercible to a valid order
    if (row["memory_static_max"] < row["memory_static_min"]
            or row["memory_dynamic_max"] < row["memory_dynamic_min"]):
        raise ApiError("MEMORY_CONSTRAINT_VIOLATION")
    if row["HVM_shadow_multiplier"] < 1.0:
        raise ApiError("INVALID_VALUE", "HVM_shadow_multiplier", row["HVM_shadow_multiplier"])
    if row["actions_after_crash"] == "rename_restart":
        raise ApiError("VALUE_NOT_SUPPORTED", "VM.actions_after_crash", "rename_restart",
                       "option would leak a domain; VMs and not domains are managed by this API")


async def assert_can_boot_here(ctx, vm: str, host: str, *, memory_check: bool = True) -> None:
    """xapi's checks before a VM boots on ``host`` (VM.assert_can_boot_here)."""
    store = ctx.store
    row = store.get("VM", vm)
    validate_basic_parameters(row)
    hrow = store.get("host", host)
    hm = hrow["metrics"]
    if store.exists("host_metrics", hm) and not store.get("host_metrics", hm)["live"]:
        raise ApiError("HOST_NOT_LIVE")
    if not row["is_control_domain"] and not hrow["enabled"]:
        raise ApiError("HOST_DISABLED", host)
    vdis = [store.get("VBD", b)["VDI"] for b in store.field("VM", vm, "VBDs")
            if not store.get("VBD", b)["empty"]]
    if row["power_state"] == "Suspended" and row["suspend_VDI"] != NULL:
        vdis.append(row["suspend_VDI"])
    for vdi in vdis:
        if store.exists("VDI", vdi):
            sr = store.get("VDI", vdi)["SR"]
            if not store.exists("SR", sr) or not storage.sr_attached(store, sr):
                raise ApiError("VM_REQUIRES_SR", vm, sr)
    for vif in store.field("VM", vm, "VIFs"):
        net = store.get("VIF", vif)["network"]
        if not store.exists("network", net):
            raise ApiError("VM_REQUIRES_NETWORK", vm, net)
    if row["power_state"] != "Running":
        devices.assert_devices_available(store, vm, host)
    if row["domain_type"] in ("hvm", "pv_in_pvh") and not any(
            "hvm" in c for c in hrow["capabilities"]):
        raise ApiError("VM_HVM_REQUIRED", vm)
    if memory_check and ctx.backend is not None and row["power_state"] != "Running":
        needed = memory_needed(ctx.backend, row)
        free = await ctx.backend.host_free_memory()
        if needed > free:
            raise ApiError("HOST_NOT_ENOUGH_FREE_MEMORY", needed, free)


# ---------------------------------------------------------------------------------------------
# create / destroy
# ---------------------------------------------------------------------------------------------

@action("VM.create")
def create(ctx, record):
    """As xapi: the VM starts Halted with its own metrics and a mac_seed; run-time fields
    given by the caller are ignored."""
    store = ctx.store
    vm = create_from_record(ctx, "VM", record)
    row = store.get("VM", vm)
    other = dict(row["other_config"])
    other.setdefault("mac_seed", new_ref()[len("OpaqueRef:"):])
    domain_type = row["domain_type"]
    if domain_type == "unspecified":
        domain_type = "hvm" if row["HVM_boot_policy"] else "pv"
    store.update("VM", vm, {
        "power_state": "Halted", "domid": -1, "resident_on": NULL, "current_operations": {},
        "is_a_snapshot": False, "snapshot_of": NULL, "snapshot_time": EPOCH, "parent": NULL,
        "is_control_domain": False, "is_default_template": False, "suspend_VDI": NULL,
        "guest_metrics": NULL, "metrics": NULL, "other_config": other, "domain_type": domain_type,
    })
    metrics_ref(store, vm)
    if ctx.backend is not None:
        row = store.get("VM", vm)
        store.update("VM", vm, {"memory_overhead": ctx.backend.memory_overhead(
            row["memory_static_max"], max(1, row["VCPUs_max"]))})
    update_allowed_operations(store, vm)
    return vm


@action("VM.destroy")
async def destroy(ctx, vm):
    """Removes the VM and its VBDs, VIFs and metrics; its disks stay (as xapi)."""
    store = ctx.store
    assert_operation(store, vm, "destroy")
    row = store.get("VM", vm)
    if row["suspend_VDI"] != NULL and store.exists("VDI", row["suspend_VDI"]):
        await storage.destroy_vdi(ctx, row["suspend_VDI"])  # the memory image is the VM's own
    for child in store.field("VM", vm, "children"):
        store.update("VM", child, {"parent": row["parent"]})
    for cls, field in (("VBD", "VBDs"), ("VIF", "VIFs")):
        for dev in store.field("VM", vm, field):
            metrics = store.get(cls, dev).get("metrics", NULL)
            if metrics and store.exists(cls + "_metrics", metrics):
                store.destroy(cls + "_metrics", metrics)
            vdi = store.get(cls, dev).get("VDI", NULL)
            store.destroy(cls, dev)
            if vdi != NULL and store.exists("VDI", vdi):
                storage.update_vdi_ops(store, vdi)
    devices.forget_vm_devices(store, vm)
    for cls, ref in (("VM_metrics", row["metrics"]), ("VM_guest_metrics", row["guest_metrics"])):
        if store.exists(cls, ref):
            store.destroy(cls, ref)
    from . import appliance  # (it imports this module)
    for b in row["blobs"].values():  # its blobs go with it, as in xapi
        if store.exists("blob", b):
            blob.destroy(ctx, b)
    store.destroy("VM", vm)
    appliance.update_allowed_operations(store, row["appliance"])


# ---------------------------------------------------------------------------------------------
# power operations
# ---------------------------------------------------------------------------------------------

async def _start(ctx, vm: str, host: str, paused: bool, op: str) -> None:
    store = ctx.store
    async with vm_operation(ctx, vm, op):
        await assert_can_boot_here(ctx, vm, host)
        delete_guest_metrics(store, vm)  # what a clone inherited is wrong until the agent says
        domid = await domain(ctx, vm, "start", domain_spec(store, vm), paused=paused,
                             progress=ctx.progress)
        await settle(set_live(ctx, vm, domid, "Paused" if paused else "Running"))
    vm_alert(ctx, vm, "start", host=host)


@action("VM.start")
async def start(ctx, vm, start_paused, force):
    await _start(ctx, vm, ctx.app.host_ref, start_paused, "start")


@action("VM.start_on")
async def start_on(ctx, vm, host, start_paused, force):
    await _start(ctx, vm, host, start_paused, "start_on")


async def halt_hard(ctx, vm: str) -> None:
    store = ctx.store
    row = store.get("VM", vm)
    if row["power_state"] == "Suspended":
        vdi = row["suspend_VDI"]
        if vdi != NULL and store.exists("VDI", vdi):
            await storage.destroy_vdi(ctx, vdi)
        store.update("VM", vm, {"suspend_VDI": NULL})
        force_state_reset(ctx, vm, "Halted")
    elif row["power_state"] in LIVE:
        await domain(ctx, vm, "shutdown", clean=False, progress=ctx.progress)
        force_state_reset(ctx, vm, "Halted")


async def _clean_shutdown(ctx, vm: str, timeout: float = 1200.0) -> None:
    await domain(ctx, vm, "shutdown", clean=True, timeout=timeout, progress=ctx.progress)
    force_state_reset(ctx, vm, "Halted")


@action("VM.clean_shutdown")
async def clean_shutdown(ctx, vm):
    async with vm_operation(ctx, vm, "clean_shutdown"):
        await _clean_shutdown(ctx, vm)
    vm_alert(ctx, vm, "shutdown")


@action("VM.hard_shutdown")
async def hard_shutdown(ctx, vm):
    async with vm_operation(ctx, vm, "hard_shutdown"):
        await halt_hard(ctx, vm)
    vm_alert(ctx, vm, "hard_shutdown")


@action("VM.shutdown")
async def shutdown(ctx, vm):
    """Clean if the guest can, else hard (xapi's VM.shutdown)."""
    async with vm_operation(ctx, vm, "shutdown"):
        row = ctx.store.get("VM", vm)
        clean = row["power_state"] == "Running"
        if clean:
            try:  # the VM's shutdown_delay, when set, is how long the guest is given
                await _clean_shutdown(ctx, vm, float(row["shutdown_delay"] or 1200))
            except ApiError as e:
                log.info("clean shutdown of %s failed (%s): shutting down hard", vm, e)
                clean = False
        if not clean:
            await halt_hard(ctx, vm)
    vm_alert(ctx, vm, "shutdown")  # whichever way it went


async def _reboot(ctx, vm: str, op: str, clean: bool) -> None:
    store = ctx.store
    async with vm_operation(ctx, vm, op):
        await assert_can_boot_here(ctx, vm, ctx.app.host_ref, memory_check=False)
        domid = await domain(ctx, vm, "reboot", domain_spec(store, vm), clean=clean,
                             progress=ctx.progress)
        await settle(set_live(ctx, vm, domid, "Running"))
    vm_alert(ctx, vm, op)


@action("VM.clean_reboot")
async def clean_reboot(ctx, vm):
    await _reboot(ctx, vm, "clean_reboot", True)


@action("VM.hard_reboot")
async def hard_reboot(ctx, vm):
    await _reboot(ctx, vm, "hard_reboot", False)


@action("VM.pause")
async def pause(ctx, vm):
    async with vm_operation(ctx, vm, "pause"):
        await domain(ctx, vm, "pause")
        await settle(_set_run_state(ctx, vm, "Paused"))
    vm_alert(ctx, vm, "pause")


@action("VM.unpause")
async def unpause(ctx, vm):
    async with vm_operation(ctx, vm, "unpause"):
        await domain(ctx, vm, "unpause")
        await settle(_set_run_state(ctx, vm, "Running"))
    vm_alert(ctx, vm, "unpause")


async def _set_run_state(ctx, vm: str, state: str) -> None:
    ctx.store.update("VM", vm, {"power_state": state})
    _devices_attached(ctx.store, vm, None)
    await refresh_metrics(ctx, vm)
    update_allowed_operations(ctx.store, vm)


def suspend_sr(ctx, vm: str) -> str:
    """Where the memory image goes: the VM's suspend_SR, the pool's, the host's (as xapi)."""
    store = ctx.store
    pool = store.refs("pool")[0]
    for sr in (store.get("VM", vm)["suspend_SR"], store.get("pool", pool)["suspend_image_SR"],
               store.get("host", ctx.app.host_ref)["suspend_image_sr"]):
        if sr != NULL and store.exists("SR", sr):
            return sr
    raise ApiError("VM_NO_SUSPEND_SR", vm)


async def new_suspend_image(ctx, vm: str, name_label: str, name_description: str):
    """A new VDI for the VM's memory, on the SR suspend_sr picks: (that SR, the VDI)."""
    sr = suspend_sr(ctx, vm)
    size = ctx.backend.suspend_image_size(ctx.store.get("VM", vm)["memory_static_max"])
    return sr, await storage.create_vdi(ctx, sr, size, name_label, type="suspend",
                                        name_description=name_description)


async def suspend_domain(ctx, vm: str) -> None:
    """Save the memory of a running VM to a new suspend VDI; the VM is Suspended after."""
    store = ctx.store
    sr, vdi = await new_suspend_image(ctx, vm, "Suspend image",
                                      f"Suspend image of VM {store.get('VM', vm)['uuid']}")
    try:
        vrow = store.get("VDI", vdi)
        await domain(ctx, vm, "suspend", store.get("SR", sr)["uuid"], vrow["location"],
                     progress=ctx.progress)
    except BaseException:
        await asyncio.shield(storage.destroy_vdi(ctx, vdi))
        raise
    store.update("VM", vm, {"suspend_VDI": vdi})
    force_state_reset(ctx, vm, "Suspended")


@action("VM.suspend")
async def suspend(ctx, vm):
    async with vm_operation(ctx, vm, "suspend"):
        await suspend_domain(ctx, vm)
    vm_alert(ctx, vm, "suspend")


async def resume_domain(ctx, vm: str, paused: bool = False) -> None:
    """Bring a Suspended VM back from its suspend VDI, which is destroyed afterwards."""
    store = ctx.store
    row = store.get("VM", vm)
    vdi = row["suspend_VDI"]
    if vdi == NULL or not store.exists("VDI", vdi):
        raise ApiError("VM_HAS_NO_SUSPEND_VDI", vm)
    vrow = store.get("VDI", vdi)
    domid = await domain(ctx, vm, "resume", domain_spec(store, vm),
                         store.get("SR", vrow["SR"])["uuid"], vrow["location"], paused=paused,
                         progress=ctx.progress)

    async def after():
        store.update("VM", vm, {"suspend_VDI": NULL})
        await set_live(ctx, vm, domid, "Paused" if paused else "Running")
        await storage.destroy_vdi(ctx, vdi)

    await settle(after())


async def _resume(ctx, vm: str, host: str, paused: bool, op: str) -> None:
    async with vm_operation(ctx, vm, op):
        await assert_can_boot_here(ctx, vm, host)
        await resume_domain(ctx, vm, paused)
    vm_alert(ctx, vm, "resume", host=host)


@action("VM.resume")
async def resume(ctx, vm, start_paused, force):
    await _resume(ctx, vm, ctx.app.host_ref, start_paused, "resume")


@action("VM.resume_on")
async def resume_on(ctx, vm, host, start_paused, force):
    await _resume(ctx, vm, host, start_paused, "resume_on")


@action("VM.power_state_reset")
async def power_state_reset(ctx, vm):
    """Forget the VM's domain (for a host that lost it); refused while the domain runs."""
    store = ctx.store
    row = store.get("VM", vm)
    if row["is_control_domain"]:
        raise ApiError("CANNOT_RESET_CONTROL_DOMAIN", vm)
    if row["power_state"] in LIVE and ctx.backend is not None:
        domains = await ctx.backend.domain_list()
        if domains.get(row["uuid"], {}).get("power_state") == "Running":
            raise ApiError("DOMAIN_EXISTS", vm)
        await domain(ctx, vm, "destroy")
    store.update("VM", vm, {"current_operations": {}})
    force_state_reset(ctx, vm, "Halted")


# ---------------------------------------------------------------------------------------------
# what the backend reports by itself, and recovery at start-up
# ---------------------------------------------------------------------------------------------

def _ctx(app):
    from ..server.dispatch import Context
    return Context(app, None)


async def on_backend_event(app, event: dict) -> None:
    # the backend's own task may have inherited an Async call's undo journal: not ours to fill
    journal.set(None)
    ctx = _ctx(app)
    store = ctx.store
    vm = store.by_uuid("VM", event.get("vm_uuid", ""))
    if vm is None:
        return
    kind = event.get("kind")
    row = store.get("VM", vm)
    if kind == "guest_metrics" and row["power_state"] in LIVE:
        await refresh_guest_metrics(ctx, vm)
    elif kind in ("paused", "running") and row["power_state"] in LIVE:
        await _set_run_state(ctx, vm, "Paused" if kind == "paused" else "Running")
    elif kind == "stopped" and row["power_state"] in LIVE:
        await _guest_stopped(ctx, vm, event.get("reason", "halt"))
    store.commit()


async def _guest_stopped(ctx, vm: str, reason: str) -> None:
    """The guest halted, rebooted or crashed by itself: apply actions_after_*."""
    row = ctx.store.get("VM", vm)
    action_field = {"halt": "actions_after_shutdown", "reboot": "actions_after_reboot",
                    "crash": "actions_after_crash"}.get(reason, "actions_after_shutdown")
    force_state_reset(ctx, vm, "Halted")
    if "restart" not in row[action_field]:
        return
    try:
        domid = await domain(ctx, vm, "start", domain_spec(ctx.store, vm))
        await set_live(ctx, vm, domid, "Running")
    except ApiError as e:
        log.warning("VM %s could not be restarted after %s: %s", row["uuid"], reason, e)


@on_loop_start_hook
async def recover(app) -> None:
    """Listen to the backend; make the store agree with the domains that exist now."""
    if app.backend is None:
        return
    app.backend.set_event_sink(lambda event: on_backend_event(app, event))
    ctx = _ctx(app)
    store = ctx.store
    domains = await app.backend.domain_list()
    for vm in store.refs("VM"):
        row = store.get("VM", vm)
        if row["is_control_domain"]:
            continue
        if row["current_operations"]:
            store.update("VM", vm, {"current_operations": {}})  # their tasks died with us
        dom = domains.get(row["uuid"])
        if row["power_state"] in LIVE and dom is None:
            force_state_reset(ctx, vm, "Halted")  # the host rebooted under it
        elif dom is not None:
            await set_live(ctx, vm, dom["domid"], dom["power_state"])
        update_allowed_operations(store, vm)
