"""VM snapshot schedules: VMSS.snapshot_now.

xapi hands snapshot_now to its `vmss` plugin, which does what the schedule's timer does: every
VM of the schedule gets a snapshot of the schedule's type (snapshot, checkpoint or
snapshot_with_quiesce), marked is_vmss_snapshot; a VM's oldest schedule snapshots go once it
has more than retained_snapshots of them; last_run_time is stamped. A VM that fails does not
stop the others: the run ends with one alert about the schedule, VMSS_SNAPSHOT_SUCCEEDED or
VMSS_SNAPSHOT_FAILED with a line per failed VM in the form XenCenter reads
(``VM:<name>UUID:<uuid>Error:['CODE', 'param', …]``). A run asked for while one is under way
for the same schedule only raises VMSS_SNAPSHOT_LOCK_FAILED.
"""
from __future__ import annotations

from ..db.store import NULL, now
from ..errors import ApiError
from . import storage
from .message import create_message
from .registry import action
from .vm import assert_operation
from .vm import destroy as destroy_vm
from .vm_copy import checkpoint, snapshot

# message priorities: XenCenter shows a VMSS message below 3 as an error (with the per-VM lines),
# 3 as a warning and above as information
_FAILED, _WARN, _INFO = 2, 3, 5

_running: set[str] = set()  # schedules with a run under way


async def _take(ctx, vm: str, kind: str, name: str) -> str:
    if kind == "checkpoint":
        return await checkpoint(ctx, vm, name)
    if kind == "snapshot_with_quiesce":  # the guest must say it can quiesce
        assert_operation(ctx.store, vm, "snapshot_with_quiesce")
    return await snapshot(ctx, vm, name, [])


async def _uninstall(ctx, snap: str) -> None:
    """A schedule snapshot goes with its disks (CD media stay)."""
    store = ctx.store
    disks = [store.get("VBD", b)["VDI"] for b in store.field("VM", snap, "VBDs")
             if store.get("VBD", b)["type"] == "Disk"]
    await destroy_vm(ctx, snap)
    for vdi in disks:
        if vdi != NULL and store.exists("VDI", vdi):
            await storage.destroy_vdi(ctx, vdi)


async def _prune(ctx, vm: str, keep: int) -> None:
    store = ctx.store
    snaps = sorted((s for s in store.field("VM", vm, "snapshots")
                    if store.get("VM", s)["is_vmss_snapshot"]),
                   key=lambda s: store.get("VM", s)["snapshot_time"])
    for snap in snaps[:max(0, len(snaps) - keep)]:
        await _uninstall(ctx, snap)


def _failure_line(store, vm: str, err: ApiError) -> str:
    row = store.get("VM", vm) if store.exists("VM", vm) else {"name_label": "", "uuid": ""}
    codes = ", ".join(repr(str(p)) for p in err.description)
    return f"VM:{row['name_label']}UUID:{row['uuid']}Error:[{codes}]"


@action("VMSS.snapshot_now")
async def snapshot_now(ctx, vmss):
    store = ctx.store
    policy = store.get("VMSS", vmss)
    uuid = policy["uuid"]
    if vmss in _running:
        create_message(store, "VMSS_SNAPSHOT_LOCK_FAILED", _WARN, "VMSS", uuid,
                       f"The snapshot schedule {policy['name_label']} is already running")
        return "SNAPSHOT_LOCK_FAILED"
    _running.add(vmss)
    try:
        failures = []
        # snapshots made by hand of a member carry its schedule, but are not run by it
        vms = sorted(vm for vm in store.field("VMSS", vmss, "VMs")
                     if not store.get("VM", vm)["is_a_snapshot"])
        for i, vm in enumerate(vms):
            stamp = now()
            name = f"{store.get('VM', vm)['name_label']}-{stamp:%Y%m%d-%H%M%S}"
            try:
                snap = await _take(ctx, vm, policy["type"], name)
                # the snapshot is not itself a member of the schedule
                store.update("VM", snap, {"is_vmss_snapshot": True, "snapshot_schedule": NULL})
                await _prune(ctx, vm, policy["retained_snapshots"])
            except ApiError as e:
                failures.append(_failure_line(store, vm, e))
            ctx.progress((i + 1) / len(vms))
        if store.exists("VMSS", vmss):
            store.update("VMSS", vmss, {"last_run_time": now()})
        if failures:
            create_message(store, "VMSS_SNAPSHOT_FAILED", _FAILED, "VMSS", uuid,
                           "\n".join(failures))
            return "SNAPSHOT_FAILED"
        create_message(store, "VMSS_SNAPSHOT_SUCCEEDED", _INFO, "VMSS", uuid,
                       f"{len(vms)} VMs of {policy['name_label']} snapshotted")
        return "SNAPSHOT_SUCCEEDED"
    finally:
        _running.discard(vmss)
