"""VM copies: clone, copy, snapshot, checkpoint, revert, and provision from a template.

A new VM keeps its source's fields (new uuid and name, no domain); its disks are cloned,
copied or snapshotted through the storage helpers, CD drives keep their media, VIFs are
copied (new MACs for clones and copies, the same for snapshots).  Whatever fails or is
cancelled half-way is removed again: no half-made VM, VBD or VDI is left behind.
"""
from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from ..db.store import NULL, new_uuid, now
from ..errors import ApiError
from ..model.values import EPOCH
from . import devices, network, storage
from .alerts import vm_alert
from .registry import action
from .vm import (
    assert_operation, force_state_reset, halt_hard, metrics_ref, resume_domain, settle,
    suspend_domain, update_allowed_operations, vm_operation,
)

# VM fields a copy never takes from its source (identity, run time, relations)
_NOT_COPIED = frozenset({
    "uuid", "name_label", "power_state", "allowed_operations", "current_operations", "domid",
    "resident_on", "scheduled_to_be_resident_on", "metrics", "guest_metrics", "suspend_VDI",
    "is_a_snapshot", "snapshot_of", "snapshot_time", "snapshot_info", "parent",
    "is_default_template", "is_control_domain", "requires_reboot", "last_booted_record",
    "transportable_snapshot_id", "snapshot_metadata",
})
# fields revert leaves as they are on the VM (xapi's extended do-not-copy list)
_NOT_REVERTED = _NOT_COPIED | {"is_a_template", "tags", "affinity", "protection_policy",
                               "snapshot_schedule", "ha_always_run"}
_VBD_KEPT = ("userdevice", "bootable", "mode", "type", "unpluggable", "other_config",
             "qos_algorithm_type", "qos_algorithm_params")
_VIF_KEPT = ("other_config", "locking_mode", "ipv4_allowed", "ipv6_allowed",
             "qos_algorithm_type", "qos_algorithm_params")


class Made:
    """What an operation has made so far, to take away again if it does not complete."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.vdis: list[str] = []
        self.rows: list[tuple[str, str]] = []

    async def undo(self) -> None:
        store = self.ctx.store
        for cls, ref in reversed(self.rows):
            if store.exists(cls, ref):
                store.destroy(cls, ref)
        for vdi in reversed(self.vdis):
            if store.exists("VDI", vdi):
                await asyncio.shield(storage.destroy_vdi(self.ctx, vdi))


async def _dup_disk(ctx, vdi: str, kind: str, sr: str) -> str:
    if kind == "copy":
        return await storage.copy_vdi(ctx, vdi, sr if sr != NULL else ctx.store.get("VDI", vdi)["SR"])
    if kind == "clone":
        return await storage.clone_vdi(ctx, vdi)
    return await storage.snapshot_vdi(ctx, vdi)


async def dup_disks(ctx, src: str, kind: str, made: Made, *, sr=NULL,
                    ignore_vdis=()) -> list[tuple[dict, str]]:
    """src's VBD rows, each with its disk duplicated by ``kind`` (CD media kept as is)."""
    store = ctx.store
    vbds = sorted(store.field("VM", src, "VBDs"),
                  key=lambda b: int(store.get("VBD", b)["userdevice"] or 0))
    out = []
    for i, vbd in enumerate(vbds):
        row = dict(store.get("VBD", vbd))
        vdi = row["VDI"] if not row["empty"] and store.exists("VDI", row["VDI"]) else NULL
        if vdi != NULL and vdi in ignore_vdis:
            continue
        if vdi != NULL and row["type"] != "CD":
            vdi = await _dup_disk(ctx, vdi, kind, sr)
            made.vdis.append(vdi)
        out.append((row, vdi))
        ctx.progress(0.1 + 0.8 * (i + 1) / len(vbds))
    return out


def attach_disks(ctx, dst: str, disks: list[tuple[dict, str]], made: Made) -> None:
    for row, vdi in disks:
        vbd = storage.create_vbd(ctx, dst, vdi, row["userdevice"], type=row["type"],
                                 mode=row["mode"], bootable=row["bootable"],
                                 empty=vdi == NULL, unpluggable=row["unpluggable"],
                                 other_config=row["other_config"],
                                 qos_algorithm_type=row["qos_algorithm_type"],
                                 qos_algorithm_params=row["qos_algorithm_params"])
        made.rows.append(("VBD", vbd))


def copy_vifs(ctx, src: str, dst: str, keep_mac: bool, made: Made) -> None:
    """dst gets src's VIFs: new MACs for clones and copies, the same for snapshots."""
    store = ctx.store
    for vif in store.field("VM", src, "VIFs"):
        row = store.get("VIF", vif)
        new = network.create_vif(ctx, dst, row["network"], row["device"],
                                 row["MAC"] if keep_mac else "",
                                 **{k: row[k] for k in _VIF_KEPT})
        made.rows.append(("VIF", new))


def _new_vm_fields(store, vm: str, new_name: str, kind: str) -> dict:
    src = store.get("VM", vm)
    snap = kind in ("snapshot", "checkpoint")
    fields = {k: v for k, v in src.items() if k not in _NOT_COPIED}
    other = dict(src["other_config"])
    if not snap:
        other["mac_seed"] = new_uuid()
        other.pop("default_template", None)
    if src["is_a_template"] and not src["is_a_snapshot"]:
        other.setdefault("base_template_name", src["name_label"])
    fields.update({
        "name_label": new_name, "other_config": other, "power_state": "Halted", "domid": -1,
        "is_a_template": src["is_a_template"] or snap, "is_a_snapshot": snap,
        "is_default_template": False, "snapshot_of": vm if snap else NULL,
        "snapshot_time": now() if snap else EPOCH,
        "snapshot_info": {"power-state-at-snapshot": src["power_state"],
                          "disk-snapshot-type": "crash_consistent"} if snap else {},
        "parent": src["parent"] if snap else NULL,
    })
    return fields


async def copy_vm(ctx, vm: str, new_name: str, kind: str, *, sr=NULL, ignore_vdis=()) -> str:
    """The new VM (kind: clone | copy | snapshot | checkpoint), complete or not at all."""
    store = ctx.store
    made = Made(ctx)
    snap = kind in ("snapshot", "checkpoint")
    try:
        new = store.create("VM", _new_vm_fields(store, vm, new_name, kind))
        made.rows.append(("VM", new))
        made.rows.append(("VM_metrics", metrics_ref(store, new)))
        attach_disks(ctx, new, await dup_disks(ctx, vm, kind, made, sr=sr,
                                               ignore_vdis=ignore_vdis), made)
        copy_vifs(ctx, vm, new, snap, made)
        made.rows.extend(devices.copy_vm_devices(store, vm, new))
        src = store.get("VM", vm)
        memory = src["suspend_VDI"]
        # the memory goes along, but a VM made from a checkpoint starts halted (as xapi)
        if (src["power_state"] == "Suspended" and not src["is_a_snapshot"]
                and store.exists("VDI", memory)):
            image = await _dup_disk(ctx, memory, kind, sr)
            made.vdis.append(image)
            store.update("VM", new, {"suspend_VDI": image})
            force_state_reset(ctx, new, "Suspended")
    except BaseException:
        await made.undo()
        raise
    if snap:
        store.update("VM", vm, {"parent": new})
    update_allowed_operations(store, new)
    return new


def _assert_copy_target(store, sr) -> None:
    if sr != NULL and store.get("SR", sr)["content_type"] == "iso":
        raise ApiError("OPERATION_NOT_ALLOWED", "Cannot copy a VM's disks to an ISO SR")


async def _copy_op(ctx, vm, new_name, kind, *, sr=NULL, ignore_vdis=()):
    async with vm_operation(ctx, vm, kind):
        return await copy_vm(ctx, vm, new_name, kind, sr=sr, ignore_vdis=ignore_vdis)


@action("VM.clone")
async def clone(ctx, vm, new_name):
    return await _copy_op(ctx, vm, new_name, "clone")


@action("VM.copy")
async def copy(ctx, vm, new_name, sr):
    _assert_copy_target(ctx.store, sr)
    return await _copy_op(ctx, vm, new_name, "copy", sr=sr)


@action("VM.snapshot")
async def snapshot(ctx, vm, new_name, ignore_vdis):
    new = await _copy_op(ctx, vm, new_name, "snapshot", ignore_vdis=set(ignore_vdis))
    vm_alert(ctx, vm, "snapshot", new_name=new_name)
    return new


@action("VM.checkpoint")
async def checkpoint(ctx, vm, new_name):
    """A snapshot with the memory: a running VM is suspended, snapshotted and resumed."""
    store = ctx.store
    async with vm_operation(ctx, vm, "checkpoint"):
        running = store.get("VM", vm)["power_state"] == "Running"
        if running:
            await suspend_domain(ctx, vm)
        try:
            new = await copy_vm(ctx, vm, new_name, "checkpoint")
        finally:
            if running:
                try:
                    await settle(resume_domain(ctx, vm))
                except ApiError:
                    raise ApiError("VM_CHECKPOINT_RESUME_FAILED", vm) from None
        store.update("VM", new, {"snapshot_info": {**store.get("VM", new)["snapshot_info"],
                                                   "power-state-at-snapshot": "Running"
                                                   if running else
                                                   store.get("VM", vm)["power_state"]}})
    vm_alert(ctx, vm, "checkpoint", new_name=new_name)
    return new


# ---------------------------------------------------------------------------------------------
# revert
# ---------------------------------------------------------------------------------------------

@action("VM.revert")
async def revert(ctx, snapshot):
    """The VM goes back to its snapshot: fields, disks (clones of the snapshot's), VIFs, and
    the power state (Suspended for a checkpoint)."""
    store = ctx.store
    assert_operation(store, snapshot, "revert")
    vm = store.get("VM", snapshot)["snapshot_of"]
    if not store.exists("VM", vm):
        raise ApiError("VM_REVERT_FAILED", snapshot, vm)
    async with vm_operation(ctx, snapshot, "revert"), vm_operation(ctx, vm, "reverting"):
        row = store.get("VM", vm)
        if row["power_state"] != "Halted":  # xapi calls VM.hard_shutdown, which raises its alert
            await halt_hard(ctx, vm)  # a suspended VM loses its suspend image
            vm_alert(ctx, vm, "hard_shutdown")
        # the new disks are made first: a failure leaves the VM's own as they were
        made = Made(ctx)
        try:
            disks = await dup_disks(ctx, snapshot, "clone", made)
            image = store.get("VM", snapshot)["suspend_VDI"]
            new_image = NULL
            if store.get("VM", snapshot)["power_state"] == "Suspended" and store.exists("VDI", image):
                new_image = await storage.clone_vdi(ctx, image)
                made.vdis.append(new_image)
        except BaseException:
            await made.undo()
            raise
        await settle(_swap_in(ctx, vm, snapshot, disks, new_image))
    vm_alert(ctx, vm, "revert", snapshot=snapshot)


async def _swap_in(ctx, vm: str, snapshot: str, disks: list, new_image: str) -> None:
    store = ctx.store
    old_disks = [store.get("VBD", b)["VDI"] for b in store.field("VM", vm, "VBDs")
                 if store.get("VBD", b)["type"] == "Disk"]
    old_image = store.get("VM", vm)["suspend_VDI"]
    for vbd in store.field("VM", vm, "VBDs"):
        store.destroy("VBD", vbd)
    for vif in store.field("VM", vm, "VIFs"):
        store.destroy("VIF", vif)
    replaced = []
    for row, new_vdi in disks:
        if row["type"] != "Disk" or new_vdi == NULL:
            continue
        # the snapshots of the disk replaced become snapshots of its replacement
        base = store.get("VDI", row["VDI"])["snapshot_of"]
        if store.exists("VDI", base):
            for snap in list(store.field("VDI", base, "snapshots")):
                store.update("VDI", snap, {"snapshot_of": new_vdi})
            if base in old_disks:
                replaced.append(base)
    made = Made(ctx)
    attach_disks(ctx, vm, disks, made)
    copy_vifs(ctx, snapshot, vm, True, made)
    fields = {k: v for k, v in store.get("VM", snapshot).items() if k not in _NOT_REVERTED}
    store.update("VM", vm, {**fields, "parent": snapshot, "suspend_VDI": new_image})
    force_state_reset(ctx, vm, "Suspended" if new_image != NULL else "Halted")
    # the VM's disks the snapshot had copies of go; others are left unattached (as xapi)
    for vdi in replaced + [old_image]:
        if vdi != NULL and store.exists("VDI", vdi):
            await storage.destroy_vdi(ctx, vdi)
    ctx.progress(1.0)


# ---------------------------------------------------------------------------------------------
# provision
# ---------------------------------------------------------------------------------------------

def provision_disks(row: dict) -> list[dict]:
    """other_config:disks, ``<provision><disk device="0" size="…" sr="" bootable="true"
    type="system"/></provision>``, as a list of attribute dicts."""
    text = row["other_config"].get("disks", "")
    if not text.strip():
        return []
    try:
        root = ET.fromstring(text)
        disks = [dict(d.attrib) for d in root.iter("disk")]
        for d in disks:
            int(d.get("size", "0"))
    except (ET.ParseError, ValueError):
        raise ApiError("INVALID_VALUE", "other_config:disks", text) from None
    return disks


def _provision_sr(ctx, uuid: str) -> str:
    store = ctx.store
    if uuid:
        sr = store.by_uuid("SR", uuid)
        if sr is None:
            raise ApiError("UUID_INVALID", "SR", uuid)
        return sr
    sr = store.get("pool", store.refs("pool")[0])["default_SR"]
    if not store.exists("SR", sr):
        raise ApiError("DEFAULT_SR_NOT_FOUND", sr)
    return sr


@action("VM.provision")
async def provision(ctx, vm):
    """Install a VM from a template: make the disks its provisioning spec asks for; it is no
    longer a template after (as xapi)."""
    store = ctx.store
    async with vm_operation(ctx, vm, "provision"):
        row = store.get("VM", vm)
        disks = provision_disks(row)
        made = Made(ctx)
        try:
            for i, disk in enumerate(disks):
                sr = _provision_sr(ctx, disk.get("sr", ""))
                vdi = await storage.create_vdi(ctx, sr, int(disk.get("size", "0")),
                                               f"{row['name_label']} {disk.get('device', i)}",
                                               type=disk.get("type", "system"))
                made.vdis.append(vdi)
                vbd = storage.create_vbd(ctx, vm, vdi, disk.get("device", "autodetect"),
                                         bootable=disk.get("bootable") == "true")
                made.rows.append(("VBD", vbd))
                ctx.progress((i + 1) / (len(disks) + 1))
        except BaseException:
            await made.undo()
            raise
        other = {k: v for k, v in store.get("VM", vm)["other_config"].items() if k != "disks"}
        store.update("VM", vm, {"is_a_template": False, "other_config": other})
        store.update("VM_metrics", metrics_ref(store, vm), {"install_time": now()})
