"""VM appliances: groups of VMs started and shut down together, in the order of VM.order.

start runs VM.start on the appliance's halted VMs, lowest `order` first, the VMs of one order
together; the shutdowns go highest order first.  As in xapi, a VM that fails does not stop the
others: at the end, OPERATION_PARTIALLY_FAILED names the operation and every VM that did not
reach the wanted power state.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from ..errors import ApiError
from . import vm as vm_actions
from .generic import create_from_record, operations_in_progress, set_allowed_operations
from .registry import action
from .vm_extras import assert_vm_recoverable, recover_vms, srs_required_for_recovery

log = logging.getLogger("pyxapi.appliance")

_OPS = ("start", "clean_shutdown", "hard_shutdown", "shutdown")


def operation_error(store, appliance: str, op: str) -> ApiError | None:
    """xapi's policy: one operation at a time, and only when some VM can take it."""
    row = store.get("VM_appliance", appliance)
    if row["current_operations"]:
        return ApiError("OTHER_OPERATION_IN_PROGRESS", "VM_appliance", appliance)
    vms = store.field("VM_appliance", appliance, "VMs")
    if not vms:
        return ApiError("OPERATION_NOT_ALLOWED", "Appliance has no VMs.")
    states = {store.get("VM", vm)["power_state"] for vm in vms}
    if op == "start" and "Halted" not in states:
        return ApiError("OPERATION_NOT_ALLOWED", "There are no halted VMs in this appliance.")
    if op == "clean_shutdown" and "Running" not in states:
        return ApiError("OPERATION_NOT_ALLOWED", "There are no running VMs in this appliance.")
    if op in ("hard_shutdown", "shutdown") and states == {"Halted"}:
        return ApiError("OPERATION_NOT_ALLOWED", "All VMs in this appliance are halted.")
    return None


def update_allowed_operations(store, appliance: str) -> None:
    if store.exists("VM_appliance", appliance):
        set_allowed_operations(store, "VM_appliance", appliance,
                               [op for op in _OPS if operation_error(store, appliance, op) is None])


@action("VM_appliance.create")
def create(ctx, record):
    appliance = create_from_record(ctx, "VM_appliance", record)
    ctx.store.update("VM_appliance", appliance, {"current_operations": {}})
    update_allowed_operations(ctx.store, appliance)
    return appliance


@action("VM.set_appliance")
def set_appliance(ctx, vm, value):
    store = ctx.store
    row = store.get("VM", vm)
    if row["is_control_domain"] or row["is_a_template"] or row["is_a_snapshot"]:
        raise ApiError("OPERATION_NOT_ALLOWED",
                       "Control domains, templates and snapshots cannot be assigned to appliances.")
    store.update("VM", vm, {"appliance": value})
    update_allowed_operations(store, row["appliance"])
    update_allowed_operations(store, value)


async def _perform(ctx, appliance: str, op: str, vm_op, wanted: str, ascending: bool) -> None:
    store = ctx.store
    err = operation_error(store, appliance, op)
    if err is not None:
        raise err
    with operations_in_progress(ctx, ("VM_appliance", appliance, op, update_allowed_operations)):
        targets = [vm for vm in store.field("VM_appliance", appliance, "VMs")
                   if store.get("VM", vm)["power_state"] != wanted]
        groups = defaultdict(list)
        for vm in targets:
            groups[store.get("VM", vm)["order"]].append(vm)
        for order in sorted(groups, reverse=not ascending):
            results = await asyncio.gather(*(vm_op(ctx, vm) for vm in groups[order]),
                                           return_exceptions=True)
            for vm, result in zip(groups[order], results):
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    log.info("VM_appliance.%s: VM %s failed: %s", op, vm, result)
        failed = [vm for vm in targets
                  if store.exists("VM", vm) and store.get("VM", vm)["power_state"] != wanted]
        if failed:
            raise ApiError("OPERATION_PARTIALLY_FAILED", f"VM_appliance.{op}", *failed)


@action("VM_appliance.start")
async def start(ctx, appliance, paused):
    await _perform(ctx, appliance, "start",
                   lambda c, vm: vm_actions.start(c, vm, paused, False),
                   "Paused" if paused else "Running", ascending=True)


@action("VM_appliance.clean_shutdown")
async def clean_shutdown(ctx, appliance):
    await _perform(ctx, appliance, "clean_shutdown", vm_actions.clean_shutdown, "Halted",
                   ascending=False)


@action("VM_appliance.hard_shutdown")
async def hard_shutdown(ctx, appliance):
    await _perform(ctx, appliance, "hard_shutdown", vm_actions.hard_shutdown, "Halted",
                   ascending=False)


@action("VM_appliance.shutdown")
async def shutdown(ctx, appliance):
    """As xapi: the hard shutdown of every VM."""
    await _perform(ctx, appliance, "shutdown", vm_actions.hard_shutdown, "Halted",
                   ascending=False)


@action("VM_appliance.assert_can_be_recovered")
def assert_can_be_recovered(ctx, appliance, session_to):
    for vm in ctx.store.field("VM_appliance", appliance, "VMs"):
        assert_vm_recoverable(ctx.store, vm)


@action("VM_appliance.get_SRs_required_for_recovery")
def get_SRs_required_for_recovery(ctx, appliance, session_to):
    out = []
    for vm in ctx.store.field("VM_appliance", appliance, "VMs"):
        out += [sr for sr in srs_required_for_recovery(ctx.store, vm) if sr not in out]
    return out


@action("VM_appliance.recover")
def recover(ctx, appliance, session_to, force):
    """Recovered into the pool that holds it: the appliance and its VMs are found there."""
    assert_can_be_recovered(ctx, appliance, session_to)
    recover_vms(ctx.store, ctx.store.field("VM_appliance", appliance, "VMs"), force)
