"""VM settings with rules (memory, VCPUs, boot policy) and the questions a client asks a VM.

Memory: static_min <= dynamic_min <= dynamic_max <= static_max, or
MEMORY_CONSTRAINT_VIOLATION_ORDER (MEMORY_CONSTRAINT_VIOLATION_MAXPIN for a control domain,
whose memory must be pinned at static_max), checked before anything is written.  The static
setters all work through set_memory_static_range and the dynamic ones through
set_memory_dynamic_range, as xapi's message forwarding does.
"""
from __future__ import annotations

from ..db.store import now
from ..errors import ApiError
from .generic import generic_handler
from .registry import action
from .vm import (
    assert_can_boot_here, assert_operation, domain, memory_needed, refresh_metrics,
    update_allowed_operations, vm_operation,
)
from . import network, storage

_VCPUS_RULE = "VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max"


def _assert_memory_order(row: dict, smin: int, dmin: int, dmax: int, smax: int) -> None:
    if row["is_control_domain"]:  # no ballooning: pinned at static_max
        if not (smin <= dmin and dmin == dmax == smax):
            raise ApiError("MEMORY_CONSTRAINT_VIOLATION_MAXPIN", "control domain")
    elif not smin <= dmin <= dmax <= smax:
        raise ApiError("MEMORY_CONSTRAINT_VIOLATION_ORDER")


MAX_VCPUS = 4096  # the largest VCPU count a Xen domain can have


def _overhead(ctx, row: dict, **changes) -> dict:
    if ctx.backend is None:
        return {}
    row = {**row, **changes}
    return {"memory_overhead": ctx.backend.memory_overhead(row["memory_static_max"],
                                                           max(1, row["VCPUs_max"]))}


async def _set_static(ctx, vm, smin: int, smax: int, op: str) -> None:
    async with vm_operation(ctx, vm, op):
        row = ctx.store.get("VM", vm)
        _assert_memory_order(row, smin, row["memory_dynamic_min"], row["memory_dynamic_max"], smax)
        ctx.store.update("VM", vm, {"memory_static_min": smin, "memory_static_max": smax,
                                    **_overhead(ctx, row, memory_static_max=smax)})
        if row["is_control_domain"] and row["power_state"] == "Running":
            ctx.store.update("VM", vm, {"requires_reboot": True})


@action("VM.set_memory_static_range")
async def set_memory_static_range(ctx, vm, smin, smax):
    await _set_static(ctx, vm, smin, smax, "changing_static_range")


@action("VM.set_memory_static_min")
async def set_memory_static_min(ctx, vm, value):
    await _set_static(ctx, vm, value, ctx.store.get("VM", vm)["memory_static_max"],
                      "changing_static_range")


@action("VM.set_memory_static_max")
async def set_memory_static_max(ctx, vm, value):
    await _set_static(ctx, vm, ctx.store.get("VM", vm)["memory_static_min"], value,
                      "changing_static_range")


@action("VM.set_memory_dynamic_range")
async def set_memory_dynamic_range(ctx, vm, dmin, dmax):
    """Halted: the new range is stored; Running: the domain is ballooned to the new maximum
    first (HOST_NOT_ENOUGH_FREE_MEMORY leaves everything as it was)."""
    store = ctx.store
    async with vm_operation(ctx, vm, "changing_dynamic_range"):
        row = store.get("VM", vm)
        _assert_memory_order(row, row["memory_static_min"], dmin, dmax, row["memory_static_max"])
        if row["power_state"] == "Running":
            await domain(ctx, vm, "set_memory", dmax)
        store.update("VM", vm, {"memory_dynamic_min": dmin, "memory_dynamic_max": dmax,
                                "memory_target": dmin if row["power_state"] == "Halted" else dmax})
        if row["power_state"] == "Running":
            await refresh_metrics(ctx, vm)


@action("VM.set_memory_dynamic_min")
async def set_memory_dynamic_min(ctx, vm, value):
    await set_memory_dynamic_range(ctx, vm, value, ctx.store.get("VM", vm)["memory_dynamic_max"])


@action("VM.set_memory_dynamic_max")
async def set_memory_dynamic_max(ctx, vm, value):
    await set_memory_dynamic_range(ctx, vm, ctx.store.get("VM", vm)["memory_dynamic_min"], value)


async def _set_limits(ctx, vm, smin, smax, dmin, dmax) -> None:
    async with vm_operation(ctx, vm, "changing_memory_limits"):
        row = ctx.store.get("VM", vm)
        _assert_memory_order(row, smin, dmin, dmax, smax)
        ctx.store.update("VM", vm, {
            "memory_static_min": smin, "memory_static_max": smax, "memory_dynamic_min": dmin,
            "memory_dynamic_max": dmax, "memory_target": dmin,
            **_overhead(ctx, row, memory_static_max=smax)})


@action("VM.set_memory_limits")
async def set_memory_limits(ctx, vm, static_min, static_max, dynamic_min, dynamic_max):
    await _set_limits(ctx, vm, static_min, static_max, dynamic_min, dynamic_max)


@action("VM.set_memory")
async def set_memory(ctx, vm, value):
    """static_max, dynamic_min and dynamic_max all set to ``value`` (xapi's VM.set_memory)."""
    await _set_limits(ctx, vm, ctx.store.get("VM", vm)["memory_static_min"], value, value, value)


@action("VM.set_memory_target_live")
def set_memory_target_live(ctx, vm, target):
    """Deprecated in xapi, where it does nothing: set_memory_dynamic_range is the way."""


@action("VM.wait_memory_target_live")
def wait_memory_target_live(ctx, vm):
    """The simulated balloon driver reaches its target at once."""


@action("VM.get_cooperative")
def get_cooperative(ctx, vm):
    return True


@action("VM.compute_memory_overhead")
def compute_memory_overhead(ctx, vm):
    row = ctx.store.get("VM", vm)
    return _overhead(ctx, row).get("memory_overhead", row["memory_overhead"])


@action("VM.set_VCPUs_max")
async def set_VCPUs_max(ctx, vm, value):
    async with vm_operation(ctx, vm, "changing_VCPUs"):
        row = ctx.store.get("VM", vm)
        if value < 1 or value < row["VCPUs_at_startup"]:
            raise ApiError("INVALID_VALUE", _VCPUS_RULE, value)
        if value > MAX_VCPUS:  # beyond any Xen domain; also keeps derived sizes within int64
            raise ApiError("INVALID_VALUE", "VCPUs_max", value)
        ctx.store.update("VM", vm, {"VCPUs_max": value, **_overhead(ctx, row, VCPUs_max=value)})
        if row["is_control_domain"] and row["power_state"] == "Running":
            ctx.store.update("VM", vm, {"requires_reboot": True})


@action("VM.set_VCPUs_at_startup")
def set_VCPUs_at_startup(ctx, vm, value):
    row = ctx.store.get("VM", vm)
    if row["is_control_domain"] and row["domid"] == 0:
        raise ApiError("OPERATION_NOT_ALLOWED", "set_VCPUs_at_startup is not allowed on dom0")
    if value < 1 or value > row["VCPUs_max"]:
        raise ApiError("INVALID_VALUE", _VCPUS_RULE, value)
    ctx.store.update("VM", vm, {"VCPUs_at_startup": value})


@action("VM.set_VCPUs_number_live")
async def set_VCPUs_number_live(ctx, vm, nvcpu):
    async with vm_operation(ctx, vm, "changing_VCPUs_live"):
        row = ctx.store.get("VM", vm)
        if nvcpu < 1 or nvcpu > row["VCPUs_max"]:
            raise ApiError("INVALID_VALUE", "VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max",
                           nvcpu)
        await domain(ctx, vm, "set_vcpus", nvcpu)
        ctx.store.update("VM", vm, {"VCPUs_at_startup": nvcpu})
        await refresh_metrics(ctx, vm)


async def _set_shadow_multiplier(ctx, vm: str, op: str, multiplier: float) -> None:
    async with vm_operation(ctx, vm, op):
        if multiplier < 1.0:
            raise ApiError("INVALID_VALUE", "multiplier", multiplier)
        ctx.store.update("VM", vm, {"HVM_shadow_multiplier": multiplier})


@action("VM.set_HVM_shadow_multiplier")
async def set_HVM_shadow_multiplier(ctx, vm, value):
    await _set_shadow_multiplier(ctx, vm, "changing_shadow_memory", value)


@action("VM.set_shadow_multiplier_live")
async def set_shadow_multiplier_live(ctx, vm, multiplier):
    await _set_shadow_multiplier(ctx, vm, "changing_shadow_memory_live", multiplier)


@action("VM.set_HVM_boot_policy")
def set_HVM_boot_policy(ctx, vm, value):
    """domain_type follows: "" is PV, anything else HVM (as xapi)."""
    ctx.store.update("VM", vm, {"HVM_boot_policy": value,
                                "domain_type": "hvm" if value else "pv"})


@action("VM.set_domain_type")
def set_domain_type(ctx, vm, value):
    """HVM_boot_policy follows, for clients that only know the old field (as xapi)."""
    ctx.store.update("VM", vm, {"domain_type": value,
                                "HVM_boot_policy": "BIOS order" if value == "hvm" else ""})


@action("VM.set_is_a_template")
def set_is_a_template(ctx, vm, value):
    """Making a template needs a halted VM; un-templating is installing it (install_time)."""
    store = ctx.store
    if value:
        assert_operation(store, vm, "make_into_template")
        store.update("VM", vm, {"is_a_template": True, "ha_always_run": False})
    else:
        store.update("VM", vm, {"is_a_template": False})
        metrics = store.get("VM", vm)["metrics"]
        if store.exists("VM_metrics", metrics):
            store.update("VM_metrics", metrics, {"install_time": now()})
    update_allowed_operations(store, vm)


@action("VM.set_bios_strings")
def set_bios_strings(ctx, vm, value):
    if ctx.store.get("VM", vm)["bios_strings"]:
        raise ApiError("VM_BIOS_STRINGS_ALREADY_SET")
    ctx.store.update("VM", vm, {"bios_strings": dict(value)})


def _refreshing(name: str):
    """A generated setter of a field that allowed_operations depends on."""
    def handler(ctx, vm, *args):
        c = ctx.store.model.classes["VM"]
        generic_handler(c, c.messages[name])(ctx, [vm, *args])
        update_allowed_operations(ctx.store, vm)

    return handler


for _name in ("set_blocked_operations", "add_to_blocked_operations",
              "remove_from_blocked_operations", "add_to_other_config",
              "remove_from_other_config", "set_other_config"):
    action(f"VM.{_name}")(_refreshing(_name))


# ---------------------------------------------------------------------------------------------
# questions
# ---------------------------------------------------------------------------------------------

@action("VM.assert_operation_valid")
def assert_operation_valid(ctx, vm, op):
    assert_operation(ctx.store, vm, op)


@action("VM.update_allowed_operations")
def update_allowed_operations_action(ctx, vm):
    update_allowed_operations(ctx.store, vm)


@action("VM.assert_can_boot_here")
async def assert_can_boot_here_action(ctx, vm, host):
    await assert_can_boot_here(ctx, vm, host)


@action("VM.get_possible_hosts")
async def get_possible_hosts(ctx, vm):
    hosts = []
    for host in ctx.store.refs("host"):
        try:
            await assert_can_boot_here(ctx, vm, host)
            hosts.append(host)
        except ApiError:
            pass
    return hosts


@action("VM.get_allowed_VBD_devices")
def get_allowed_VBD_devices(ctx, vm):
    return storage.allowed_vbd_devices(ctx.store, vm)


@action("VM.get_allowed_VIF_devices")
def get_allowed_VIF_devices(ctx, vm):
    return network.allowed_vif_devices(ctx.store, vm)


@action("VM.get_boot_record")
def get_boot_record(ctx, vm):
    return ctx.store.record("VM", vm)


@action("VM.maximise_memory")
def maximise_memory(ctx, vm, total, approximate):
    """The largest static_max whose domain (memory plus overhead) fits in ``total``, in MiB."""
    row = dict(ctx.store.get("VM", vm))
    if approximate:
        row["VCPUs_max"] = 64
    lo, hi = 0, max(0, total)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if memory_needed(ctx.backend, {**row, "memory_static_max": mid,
                                       "memory_dynamic_max": mid}) <= total:
            lo = mid
        else:
            hi = mid - 1
    return lo // (1024 * 1024) * 1024 * 1024
