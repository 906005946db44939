"""Storage: SR, PBD, VDI and VBD actions, and the helpers the VM actions call.

Disks live in the backend, named by (SR uuid, VDI.location); the store keeps the API view.
Every change to disks re-reads the SR's usage from the backend so that
SR.physical_utilisation / virtual_allocation always say what the backend says.
"""
from __future__ import annotations

import contextlib
import re

from ..backends.base import device_name
from ..db.store import NULL, new_uuid, now
from ..errors import ApiError
from .generic import check_record, operations_in_progress, set_allowed_operations
from .registry import action

# SR types served by the API alone (host devices: no backend storage, no disks made here).
DEVICE_SR_TYPES = ("udev",)

_SR_COMMON = ["scan", "destroy", "forget", "plug", "unplug", "pbd_create", "pbd_destroy",
              "update"]
_SR_DISK_OPS = ["vdi_create", "vdi_destroy", "vdi_resize", "vdi_clone", "vdi_snapshot",
                "vdi_copy", "vdi_introduce", "vdi_update", "vdi_mirror", "vdi_set_on_boot"]
# what each SR type can do (the SM driver's capabilities, as storage_operations)
SR_CAPABILITIES = {
    "iso": _SR_COMMON + ["vdi_introduce", "vdi_update", "vdi_copy"],
    "udev": [op for op in _SR_COMMON if op != "destroy"] + ["vdi_introduce", "vdi_update"],
}
_DISK_SR_CAPS = _SR_COMMON + _SR_DISK_OPS
# operations that need the SR attached (a plugged PBD)
_NEEDS_ATTACHED = {"scan", "update", "unplug"} | {op for op in _SR_DISK_OPS if op != "vdi_introduce"}

# the SR capability each VDI operation needs (the others need none)
_VDI_OPS_OF_SR = {"clone": "vdi_clone", "snapshot": "vdi_snapshot", "copy": "vdi_copy",
                  "resize": "vdi_resize", "destroy": "vdi_destroy", "update": "vdi_update",
                  "mirror": "vdi_mirror", "set_on_boot": "vdi_set_on_boot",
                  "resize_online": "vdi_resize_online"}
# the operations allowed_operations lists (xapi's, without the newest ones)
_VDI_OPS = ("clone", "copy", "resize", "resize_online", "snapshot", "mirror", "destroy",
            "forget", "update", "force_unlock", "generate_config")
# what may run while the disk is attached to a running VM (copy: only read-only attached)
_VDI_LIVE_OPS = ("snapshot", "resize_online", "blocked", "clone", "mirror", "enable_cbt",
                 "disable_cbt")
# what a VDI whose data is gone (data_destroy: only its CBT metadata left) cannot do
_NOT_FOR_CBT_METADATA = ("clone", "copy", "disable_cbt", "enable_cbt", "mirror", "resize",
                         "resize_online", "snapshot", "set_on_boot")
# VDI types a VBD may point at (others are internal to the host)
VBD_VDI_TYPES = ("system", "user", "ephemeral", "suspend", "crashdump", "metadata", "rrd",
                 "pvs_cache")


# ---------------------------------------------------------------------------------------------
# small look-ups
# ---------------------------------------------------------------------------------------------

def sr_caps(store, sr) -> list[str]:
    return SR_CAPABILITIES.get(store.get("SR", sr)["type"], _DISK_SR_CAPS)


def sr_attached(store, sr) -> bool:
    return any(store.get("PBD", p)["currently_attached"] for p in store.field("SR", sr, "PBDs"))


def _assert_sr_op(store, sr, op: str) -> None:
    """SR_OPERATION_NOT_SUPPORTED when the driver cannot, SR_HAS_NO_PBDS when not attached."""
    if op not in sr_caps(store, sr):
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)
    if op in _NEEDS_ATTACHED and not sr_attached(store, sr):
        raise ApiError("SR_HAS_NO_PBDS", sr)


assert_sr_op = _assert_sr_op  # for the other storage modules


def _backed_type(sr_type: str) -> bool:
    return sr_type not in DEVICE_SR_TYPES


def _backed(store, sr) -> bool:
    return _backed_type(store.get("SR", sr)["type"])


@contextlib.contextmanager
def _names(sr=None, sr_uuid=None, vdis=()):
    """Re-raise backend errors with refs in place of the backend's names (uuid, location)."""
    try:
        yield
    except ApiError as e:
        names = {}
        if sr and sr_uuid:
            names[sr_uuid] = sr
        for location, vdi in vdis:
            names[location] = vdi
        code = "VDI_READONLY" if e.code == "VDI_READ_ONLY" else e.code
        raise ApiError(code, *[names.get(p, p) for p in e.params]) from None


def _vdi_in_use(store, vdi) -> list[str]:
    """VBDs attached to a live domain."""
    return [b for b in store.field("VDI", vdi, "VBDs")
            if store.get("VBD", b)["currently_attached"]]


vdi_in_use = _vdi_in_use


# ---------------------------------------------------------------------------------------------
# allowed_operations kept current
# ---------------------------------------------------------------------------------------------

def update_sr_ops(store, sr) -> None:
    caps = sr_caps(store, sr)
    attached = sr_attached(store, sr)
    ops = [op for op in caps if attached or op not in _NEEDS_ATTACHED]
    if attached:
        ops = [op for op in ops if op not in ("plug", "destroy", "forget")]
    elif not store.field("SR", sr, "PBDs"):
        ops = [op for op in ops if op != "plug"]
    set_allowed_operations(store, "SR", sr, ops)


def vdi_op_error(store, vdi, op: str) -> tuple | None:
    """The error ``op`` on the VDI would fail with now, or None (xapi's policy, in its order:
    busy, in use, SR capability, then what the operation itself forbids)."""
    row = store.get("VDI", vdi)
    sr = row["SR"]
    if not store.exists("SR", sr):
        return None if op == "forget" else ("HANDLE_INVALID", "SR", sr)
    if row["missing"] and op != "forget":
        return ("VDI_MISSING", sr, vdi)
    busy = [(t, o) for t, o in row["current_operations"].items() if o != "copy"]
    if busy:
        return ("OTHER_OPERATION_IN_PROGRESS", "VDI", vdi, busy[0][1], busy[0][0])
    if op == "resize" and not sr_attached(store, sr):
        return ("SR_HAS_NO_PBDS", sr)
    active = [store.get("VBD", b) for b in _vdi_in_use(store, vdi)]
    if op not in _VDI_LIVE_OPS:
        if active if op != "copy" else any(b["mode"] == "RW" for b in active):
            return ("VDI_IN_USE", vdi, op)
    for b in store.field("VDI", vdi, "VBDs"):   # a VBD being plugged/unplugged serialises
        for task, running in store.get("VBD", b)["current_operations"].items():
            return ("OTHER_OPERATION_IN_PROGRESS", "VBD", b, running, task)
    sr_row = store.get("SR", sr)
    if op == "destroy" and sr_row["type"] in DEVICE_SR_TYPES:
        return ("VDI_IS_A_PHYSICAL_DEVICE", vdi)
    if op in _VDI_OPS_OF_SR and _VDI_OPS_OF_SR[op] not in sr_caps(store, sr):
        return ("SR_OPERATION_NOT_SUPPORTED", sr)
    if op in _VDI_OPS_OF_SR and not row["managed"]:
        return ("VDI_NOT_MANAGED", vdi)
    if row["type"] == "cbt_metadata" and op in _NOT_FOR_CBT_METADATA:
        return ("VDI_INCOMPATIBLE_TYPE", vdi, "cbt_metadata")
    if row["cbt_enabled"] and op in ("mirror", "set_on_boot"):
        return ("VDI_CBT_ENABLED", vdi)
    if op == "destroy" and sr_row["is_tools_sr"]:
        return ("SR_OPERATION_NOT_SUPPORTED", sr)
    if op in ("destroy", "forget") and row["type"] == "rrd":
        return ("VDI_HAS_RRDS", vdi)
    if op == "snapshot" and row["sharable"]:
        return ("VDI_IS_SHARABLE", vdi)
    if op == "snapshot" and row["on_boot"] == "reset":
        return ("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION",)
    if op == "copy" and row["type"] in ("ha_statefile", "redo_log"):
        return ("OPERATION_NOT_ALLOWED", "VDI containing HA statefile or redo log cannot be "
                                         "copied (check the VDI's allowed operations).")
    return None


def update_vdi_ops(store, vdi) -> None:
    set_allowed_operations(store, "VDI", vdi,
                           [op for op in _VDI_OPS if vdi_op_error(store, vdi, op) is None])


_VBD_OPS = ("attach", "eject", "unplug", "unplug_force", "insert", "plug", "pause", "unpause")
_PLUG_OPS = ("plug", "unplug", "unplug_force")


def vbd_op_errors(store, vbd, *, sharing: bool = True) -> dict[str, tuple]:
    """op → the error it would fail with, for every VBD operation that cannot run now
    (xapi's policy table; the first reason found for an op wins).  ``sharing``: also check
    the other VBDs of the disk (left out when only refreshing allowed_operations)."""
    row = store.get("VBD", vbd)
    errors: dict[str, tuple] = {}

    def deny(ops, code, *params):
        for op in ops:
            errors.setdefault(op, (code, *params))

    vm = row["VM"]
    vm_row = store.get("VM", vm) if store.exists("VM", vm) else {}
    power = vm_row.get("power_state", "Halted")
    if row["current_operations"]:
        task, running = next(iter(row["current_operations"].items()))
        deny([op for op in _VBD_OPS if op not in ("pause", "unpause")],
             "OTHER_OPERATION_IN_PROGRESS", "VBD", vbd, running, task)
    if not row["unpluggable"]:
        deny(("unplug", "unplug_force"), "VBD_NOT_UNPLUGGABLE", vbd)
    if row["type"] != "CD":
        deny(("insert", "eject"), "VBD_NOT_REMOVABLE_MEDIA", vbd)
    if row["empty"]:
        deny(("eject",), "VBD_IS_EMPTY", vbd)
    else:
        deny(("insert",), "VBD_NOT_EMPTY", vbd)
    if power == "Running":
        if row["currently_attached"]:
            deny(("plug",), "DEVICE_ALREADY_ATTACHED", vbd)
        else:
            deny(("unplug", "unplug_force"), "DEVICE_ALREADY_DETACHED", vbd)
    else:
        bad = _PLUG_OPS if power == "Paused" else _PLUG_OPS + ("pause", "unpause")
        deny(bad, "VM_BAD_POWER_STATE", vm, "Running", power)
    if power == "Running" and vm_row.get("domain_type") == "hvm" and row["type"] == "CD":
        deny(_PLUG_OPS, "OPERATION_NOT_ALLOWED",
             "HVM CDROMs cannot be hotplugged/unplugged, only inserted or ejected")
    if row["type"] == "CD" and power == "Suspended":
        deny(("insert", "eject"), "VM_BAD_POWER_STATE", vm, "Halted, Running", "Suspended")
    vdi = row["VDI"]
    if not row["empty"] and store.exists("VDI", vdi):
        vdi_row = store.get("VDI", vdi)
        if not vdi_row["managed"]:
            deny(_VBD_OPS, "VDI_NOT_MANAGED", vbd)
        busy = [(t, op) for t, op in vdi_row["current_operations"].items()
                if op not in ("copy", "mirror")]
        if busy:
            deny(("attach", "plug", "insert"), "OTHER_OPERATION_IN_PROGRESS", "VDI", vdi,
                 busy[0][1], busy[0][0])
        if sharing and not row["currently_attached"]:
            others = [store.get("VBD", b) for b in store.field("VDI", vdi, "VBDs") if b != vbd]
            others = [o for o in others
                      if (o["currently_attached"] or o["current_operations"])
                      and store.get("VM", o["VM"])["power_state"] != "Suspended"]
            need_write = row["mode"] == "RW"
            if (not vdi_row["sharable"] and not vm_row.get("is_control_domain")
                    and (any(o["mode"] == "RW" for o in others) or (need_write and others))):
                deny(("attach", "insert", "plug"), "VDI_IN_USE", vdi)
            if need_write and vdi_row["read_only"]:
                deny(("attach", "insert", "plug"), "VDI_READONLY", vdi)
    return errors


def assert_vbd_op(store, vbd, op: str) -> None:
    error = vbd_op_errors(store, vbd).get(op)
    if error:
        raise ApiError(*error)


def update_vbd_ops(store, vbd) -> None:
    errors = vbd_op_errors(store, vbd, sharing=False)
    set_allowed_operations(store, "VBD", vbd, [op for op in _VBD_OPS if op not in errors])


_UPDATE_OPS = {"SR": update_sr_ops, "VDI": update_vdi_ops}


def _busy(ctx, *marks):
    """Show (cls, ref, op) in current_operations while the backend works."""
    return operations_in_progress(ctx, *((cls, ref, op, _UPDATE_OPS[cls])
                                         for cls, ref, op in marks))


async def refresh_sr(ctx, sr) -> None:
    """Read the SR's size and usage back from the backend (after any change to its disks)."""
    store = ctx.store
    if _backed(store, sr) and sr_attached(store, sr):
        row = store.get("SR", sr)
        with _names(sr, row["uuid"]):
            usage = await ctx.backend.sr_usage(row["uuid"])
        store.update("SR", sr, {k: usage[k] for k in
                                ("physical_size", "physical_utilisation", "virtual_allocation")})
    update_sr_ops(store, sr)


async def _refresh_vdi(ctx, vdi) -> None:
    """Size, utilisation and chain of one disk as the backend has it now."""
    row = ctx.store.get("VDI", vdi)
    sr_uuid = ctx.store.get("SR", row["SR"])["uuid"]
    with _names(row["SR"], sr_uuid, [(row["location"], vdi)]):
        info = await ctx.backend.vdi_info(sr_uuid, row["location"])
    sm_config = {k: v for k, v in row["sm_config"].items() if k != "vhd-parent"}
    sm_config.update(info.get("sm_config", {}))
    ctx.store.update("VDI", vdi, {"virtual_size": info["virtual_size"],
                                  "physical_utilisation": info["physical_utilisation"],
                                  "sm_config": sm_config})


async def _refresh_chain(ctx, sr, parent: str | None) -> None:
    """Disks sharing the hidden parent ``parent`` (a snapshot, clone or destroy moves data
    between them and their parent), then the SR."""
    if parent:
        for vdi in ctx.store.field("SR", sr, "VDIs"):
            if ctx.store.get("VDI", vdi)["sm_config"].get("vhd-parent") == parent:
                await _refresh_vdi(ctx, vdi)
    await refresh_sr(ctx, sr)


# ---------------------------------------------------------------------------------------------
# helpers for the VM actions
# ---------------------------------------------------------------------------------------------

def _new_vdi_row(ctx, sr, info: dict, name_label: str, **fields) -> str:
    row = {
        "name_label": name_label or info.get("name") or "",
        "SR": sr,
        "virtual_size": info["virtual_size"],
        "physical_utilisation": info["physical_utilisation"],
        "type": info.get("type") or "user",
        "sharable": bool(info.get("sharable")),
        "read_only": bool(info.get("read_only")),
        "location": info["location"],
        "sm_config": dict(info.get("sm_config") or {}),
        "managed": True,
        "missing": False,
        "is_tools_iso": bool(info.get("is_tools_iso")),
        "storage_lock": False,
        "on_boot": "persist",
    }
    row.update(fields)
    vdi = ctx.store.create("VDI", row)
    update_vdi_ops(ctx.store, vdi)
    return vdi


def _assert_vdi_op(store, vdi, op: str) -> dict:
    """Refuse ``op`` as xapi would (see vdi_op_error); an SR needing a plugged PBD says so."""
    error = vdi_op_error(store, vdi, op)
    if error:
        raise ApiError(*error)
    row = store.get("VDI", vdi)
    if op in _VDI_OPS_OF_SR and not sr_attached(store, row["SR"]):
        raise ApiError("SR_HAS_NO_PBDS", row["SR"])
    return row


async def create_vdi(ctx, sr, virtual_size, name_label, *, type="user", sharable=False,
                     read_only=False, other_config=None, name_description="", sm_config=None,
                     xenstore_data=None, tags=None) -> str:
    """Make a new empty disk on ``sr`` and its VDI row; SR_FULL if it does not fit."""
    store = ctx.store
    _assert_sr_op(store, sr, "vdi_create")
    if virtual_size < 0:
        raise ApiError("INVALID_VALUE", "virtual_size", virtual_size)
    sr_uuid = store.get("SR", sr)["uuid"]
    with _busy(ctx, ("SR", sr, "vdi_create")), _names(sr, sr_uuid):
        info = await ctx.backend.vdi_create(sr_uuid, int(virtual_size), vdi_type=type,
                                            sharable=sharable, read_only=read_only,
                                            progress=ctx.progress)
    vdi = _new_vdi_row(ctx, sr, info, name_label, type=type, sharable=sharable,
                       read_only=read_only, name_description=name_description,
                       other_config=dict(other_config or {}),
                       sm_config={**info.get("sm_config", {}), **(sm_config or {})},
                       xenstore_data=dict(xenstore_data or {}), tags=list(tags or []))
    await refresh_sr(ctx, sr)
    return vdi


async def _duplicate(ctx, vdi, op: str, **fields) -> str:
    store = ctx.store
    row = _assert_vdi_op(store, vdi, op)
    sr = row["SR"]
    sr_uuid = store.get("SR", sr)["uuid"]
    call = ctx.backend.vdi_snapshot if op == "snapshot" else ctx.backend.vdi_clone
    with _busy(ctx, ("VDI", vdi, op), ("SR", sr, "vdi_" + op)), \
            _names(sr, sr_uuid, [(row["location"], vdi)]):
        info = await call(sr_uuid, row["location"], progress=ctx.progress)
    name_label = fields.pop("name_label", None) or row["name_label"]
    keep = {k: row[k] for k in ("name_description", "type", "sharable", "other_config",
                                "xenstore_data", "on_boot", "allow_caching")}
    keep.update(fields)
    keep["read_only"] = row["read_only"] if op == "clone" else info["read_only"]
    keep["sm_config"] = {**{k: v for k, v in row["sm_config"].items() if k != "vhd-parent"},
                         **info.get("sm_config", {})}
    new = _new_vdi_row(ctx, sr, info, name_label, **keep)
    await _refresh_vdi(ctx, vdi)          # on thin SRs its data moved to the new parent
    await refresh_sr(ctx, sr)
    return new


async def clone_vdi(ctx, vdi, *, name_label=None) -> str:
    """A writable copy in the same SR (shares the chain on thin SRs)."""
    fields = {"name_label": name_label} if name_label else {}
    return await _duplicate(ctx, vdi, "clone", **fields)


async def snapshot_vdi(ctx, vdi) -> str:
    """A point-in-time copy marked as a snapshot of ``vdi``."""
    src = ctx.store.get("VDI", vdi)
    # a snapshot of a snapshot is a snapshot of the same disk
    base = src["snapshot_of"] if src["is_a_snapshot"] else vdi
    return await _duplicate(ctx, vdi, "snapshot", is_a_snapshot=True, snapshot_of=base,
                            snapshot_time=now(), cbt_enabled=src["cbt_enabled"])


async def copy_vdi(ctx, vdi, sr, *, into=NULL) -> str:
    """A full copy into ``sr`` (or over the existing disk ``into``)."""
    store = ctx.store
    row = _assert_vdi_op(store, vdi, "copy")
    src_sr = row["SR"]
    src_uuid = store.get("SR", src_sr)["uuid"]
    if into != NULL:
        sr = store.get("VDI", into)["SR"]
        target = _assert_vdi_op(store, into, "update")
        if target["read_only"]:
            raise ApiError("VDI_READONLY", into)
    _assert_sr_op(store, sr, "vdi_create")
    dst_uuid = store.get("SR", sr)["uuid"]
    vdis = [(row["location"], vdi)]
    if into != NULL:
        vdis.append((store.get("VDI", into)["location"], into))
    with _busy(ctx, ("VDI", vdi, "copy"), ("SR", sr, "vdi_create")), \
            _names(sr, dst_uuid, vdis), _names(src_sr, src_uuid):
        info = await ctx.backend.vdi_copy(
            src_uuid, row["location"], dst_uuid,
            dst_location=store.get("VDI", into)["location"] if into != NULL else None,
            progress=ctx.progress)
    if into != NULL:
        store.update("VDI", into, {"virtual_size": info["virtual_size"],
                                   "physical_utilisation": info["physical_utilisation"]})
        await refresh_sr(ctx, sr)
        return into
    new = _new_vdi_row(ctx, sr, info, row["name_label"], read_only=False,
                       **{k: row[k] for k in ("name_description", "type", "sharable",
                                              "other_config", "xenstore_data", "tags",
                                              "on_boot", "allow_caching")})
    await refresh_sr(ctx, sr)
    return new


async def destroy_vdi(ctx, vdi) -> None:
    """Erase the disk and its VDI row (VDI_IN_USE while a running VM uses it).  Its VBDs
    are destroyed with it, as xapi does."""
    store = ctx.store
    row = _assert_vdi_op(store, vdi, "destroy")
    sr = row["SR"]
    if row["type"] != "cbt_metadata":  # else its disk is gone already
        await erase_disk(ctx, vdi, "destroy")
    vbds = store.field("VDI", vdi, "VBDs")
    _forget_vdi_row(ctx, vdi)
    for vbd in vbds:                                  # not left for a garbage collector
        store.destroy("VBD", vbd)
    for vm in store.find("VM", suspend_VDI=vdi):
        store.update("VM", vm, {"suspend_VDI": NULL})
    await _refresh_chain(ctx, sr, row["sm_config"].get("vhd-parent"))


async def erase_disk(ctx, vdi, op: str = "data_destroy") -> None:
    """The backend's disk of a VDI goes (the row stays)."""
    store = ctx.store
    row = store.get("VDI", vdi)
    sr = row["SR"]
    if _backed(store, sr):
        sr_uuid = store.get("SR", sr)["uuid"]
        with _busy(ctx, ("VDI", vdi, op), ("SR", sr, "vdi_destroy")), \
                _names(sr, sr_uuid, [(row["location"], vdi)]):
            await ctx.backend.vdi_destroy(sr_uuid, row["location"], progress=ctx.progress)


def _forget_vdi_row(ctx, vdi) -> None:
    """The record goes; as in xapi, refs to it elsewhere (VBDs, snapshot_of) are left dangling."""
    ctx.store.destroy("VDI", vdi)


_DEVICE_NAME = re.compile(r"(?:xvd|hd|sd)([a-p])\d*\Z|fd([ab])\d*\Z")


def device_number(userdevice: str) -> int | None:
    """A VBD userdevice as xapi accepts it ("0", "xvdb", "hda", "sdc"…) → its disk number."""
    if userdevice.isdigit():
        return int(userdevice)
    m = _DEVICE_NAME.match(userdevice)
    return ord((m.group(1) or m.group(2))) - ord("a") if m else None


def _backend_device(vbd_row) -> str:
    """Backends name devices by number: "xvdb" → "1"."""
    return str(device_number(vbd_row["userdevice"]))


def _used_devices(store, vm) -> set[int]:
    return {device_number(store.get("VBD", b)["userdevice"]) for b in store.field("VM", vm, "VBDs")}


def allowed_vbd_devices(store, vm) -> list[str]:
    """Free userdevice numbers, lowest first (what get_allowed_VBD_devices answers)."""
    used = _used_devices(store, vm)
    limit = 255 if store.get("VM", vm)["domain_type"] != "pv" else 16
    return [str(i) for i in range(limit) if i not in used]


def create_vbd(ctx, vm, vdi, userdevice, *, type="Disk", mode="RW", bootable=False,
               empty=False, unpluggable=True, other_config=None, qos_algorithm_type="",
               qos_algorithm_params=None) -> str:
    """Connect ``vdi`` (NULL when empty) to ``vm`` at ``userdevice`` ("autodetect": the first
    free one).  Not plugged: a running VM gets it with VBD.plug."""
    store = ctx.store
    if type == "CD" and vdi == NULL:
        empty = True
    if not empty:
        if vdi == NULL or not store.exists("VDI", vdi):
            raise ApiError("HANDLE_INVALID", "VDI", vdi)
        vtype = store.get("VDI", vdi)["type"]
        if vtype not in VBD_VDI_TYPES:
            raise ApiError("VDI_INCOMPATIBLE_TYPE", vdi, vtype)
    if type == "CD" and mode != "RO":
        raise ApiError("VBD_CDS_MUST_BE_READONLY")
    if type != "CD" and empty:
        raise ApiError("VBD_NOT_REMOVABLE_MEDIA", "in constructor")
    if not empty and mode == "RW" and store.get("VDI", vdi)["read_only"]:
        raise ApiError("VDI_READONLY", vdi)
    if store.get("VM", vm)["power_state"] == "Suspended":
        raise ApiError("VM_BAD_POWER_STATE", vm, "Halted, Running", "Suspended")
    if userdevice == "autodetect":
        free = allowed_vbd_devices(store, vm)
        if not free:
            raise ApiError("INVALID_DEVICE", userdevice)
        userdevice = free[0]
    number = device_number(userdevice)
    if number is None or number > 255:
        raise ApiError("INVALID_DEVICE", userdevice)
    if number in _used_devices(store, vm):
        raise ApiError("DEVICE_ALREADY_EXISTS", userdevice)
    vbd = store.create("VBD", {
        "VM": vm, "VDI": NULL if empty else vdi, "userdevice": userdevice, "device": "",
        "bootable": bootable, "mode": mode, "type": type, "unpluggable": unpluggable,
        "empty": empty, "other_config": dict(other_config or {}), "currently_attached": False,
        "storage_lock": False, "status_code": 0, "status_detail": "", "runtime_properties": {},
        "qos_algorithm_type": qos_algorithm_type,
        "qos_algorithm_params": dict(qos_algorithm_params or {}), "qos_supported_algorithms": [],
    })
    update_vbd_ops(store, vbd)
    return vbd


def disk_spec(store, vbd) -> dict:
    """The backend's DiskSpec for a VBD (empty CD drive: no sr/location)."""
    row = store.get("VBD", vbd)
    spec = {"device": _backend_device(row), "mode": row["mode"], "type": row["type"],
            "bootable": row["bootable"], "sr": None, "location": None}
    if not row["empty"] and store.exists("VDI", row["VDI"]):
        vdi = store.get("VDI", row["VDI"])
        spec["sr"] = store.get("SR", vdi["SR"])["uuid"]
        spec["location"] = vdi["location"]
    return spec


def disk_specs(store, vm) -> list[dict]:
    return [disk_spec(store, b) for b in sorted(store.field("VM", vm, "VBDs"),
                                                 key=lambda b: device_number(store.get("VBD", b)["userdevice"]))]


def set_vbds_attached(store, vm, attached: bool) -> None:
    """VBDs follow the VM: all attached when a domain is built, none when it goes away.
    Call after every power-state change (pause/unpause too: refreshes allowed_operations)."""
    for vbd in store.field("VM", vm, "VBDs"):
        row = store.get("VBD", vbd)
        changes = {}
        if attached is not None and row["currently_attached"] != attached:
            changes["currently_attached"] = attached
        dev = device_name(_backend_device(row)) if attached else row["device"]
        if attached and row["device"] != dev:
            changes["device"] = dev
        if changes:
            store.update("VBD", vbd, changes)
        update_vbd_ops(store, vbd)
        if row["VDI"] != NULL and store.exists("VDI", row["VDI"]):
            update_vdi_ops(store, row["VDI"])


# ---------------------------------------------------------------------------------------------
# SR
# ---------------------------------------------------------------------------------------------

def supported_types(ctx) -> list[str]:
    types = list(ctx.backend.supported_sr_types()) if ctx.backend is not None else []
    return types + [t for t in DEVICE_SR_TYPES if t not in types]


async def scan_sr(ctx, sr) -> None:
    """Make the SR's VDI rows say what the backend holds: new disks appear, vanished ones
    go, sizes are read again (SR.scan)."""
    store = ctx.store
    if _backed(store, sr):
        row = store.get("SR", sr)
        with _busy(ctx, ("SR", sr, "scan")), _names(sr, row["uuid"]):
            found = {i["location"]: i for i in await ctx.backend.sr_scan(row["uuid"])}
        known = {}
        for vdi in store.field("SR", sr, "VDIs"):
            vrow = store.get("VDI", vdi)
            if (vrow["location"] not in found and vrow["managed"]
                    and vrow["type"] != "cbt_metadata"):  # CBT metadata outlives its disk
                _forget_vdi_row(ctx, vdi)
            else:
                known[vrow["location"]] = vdi
        for location, info in found.items():
            vdi = known.get(location)
            if vdi is None:
                _new_vdi_row(ctx, sr, info, info.get("name") or "")
                continue
            changes = {k: info[k] for k in ("virtual_size", "physical_utilisation", "read_only")
                       if store.get("VDI", vdi)[k] != info[k]}
            if changes:
                store.update("VDI", vdi, changes)
    await refresh_sr(ctx, sr)


async def create_sr(ctx, host, device_config, physical_size, name_label, name_description,
                    sr_type, content_type, shared, sm_config, *, other_config=None,
                    is_tools_sr=False) -> str:
    """SR.create: the SR made on its device, its record and a plugged PBD for ``host``."""
    store = ctx.store
    sr_type = sr_type.lower()
    if sr_type not in supported_types(ctx):
        raise ApiError("SR_UNKNOWN_DRIVER", sr_type)
    if physical_size < 0:
        raise ApiError("INVALID_VALUE", "physical_size", physical_size)
    sr_uuid = new_uuid()
    usage = {"physical_size": 0, "physical_utilisation": 0, "virtual_allocation": 0}
    if _backed_type(sr_type):
        usage = await ctx.backend.sr_create(sr_uuid, sr_type, dict(device_config),
                                            physical_size=physical_size)
    sr = store.create("SR", {
        "uuid": sr_uuid, "name_label": name_label, "name_description": name_description,
        "type": sr_type, "content_type": content_type, "shared": shared,
        "other_config": dict(other_config or {}),
        "sm_config": {**usage.get("sm_config", {}), **sm_config},
        "physical_size": usage["physical_size"],
        "physical_utilisation": usage["physical_utilisation"],
        "virtual_allocation": usage["virtual_allocation"],
        "is_tools_sr": is_tools_sr, "introduced_by": NULL,
    })
    store.create("PBD", {"host": host, "SR": sr, "device_config": dict(device_config),
                         "currently_attached": True, "other_config": {}})
    await scan_sr(ctx, sr)
    return sr


@action("SR.create")
async def sr_create(ctx, host, device_config, physical_size, name_label, name_description,
                    type, content_type, shared, sm_config):
    return await create_sr(ctx, host, device_config, physical_size, name_label,
                           name_description, type, content_type, shared, sm_config)


@action("SR.introduce")
def sr_introduce(ctx, uuid, name_label, name_description, type, content_type, shared, sm_config):
    store = ctx.store
    if uuid and store.by_uuid("SR", uuid):
        raise ApiError("SR_UUID_EXISTS", uuid)
    fields = {"name_label": name_label, "name_description": name_description,
              "type": type.lower(), "content_type": content_type, "shared": shared,
              "sm_config": sm_config, "physical_size": -1, "physical_utilisation": -1,
              "virtual_allocation": 0, "introduced_by": NULL}
    if uuid:
        fields["uuid"] = uuid
    sr = store.create("SR", fields)
    update_sr_ops(store, sr)
    return sr


def _assert_no_plugged_pbd(store, sr) -> None:
    if sr_attached(store, sr):
        raise ApiError("SR_HAS_PBD", sr)


def _forget_sr_rows(ctx, sr) -> None:
    store = ctx.store
    for pbd in store.field("SR", sr, "PBDs"):
        store.destroy("PBD", pbd)
    for vdi in store.field("SR", sr, "VDIs"):
        _forget_vdi_row(ctx, vdi)
    store.destroy("SR", sr)


@action("SR.forget")
def sr_forget(ctx, sr):
    _assert_no_plugged_pbd(ctx.store, sr)
    _forget_sr_rows(ctx, sr)


@action("SR.destroy")
async def sr_destroy(ctx, sr):
    store = ctx.store
    _assert_no_plugged_pbd(store, sr)
    if "destroy" not in sr_caps(store, sr):
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)
    if store.get("SR", sr)["other_config"].get("indestructible") == "true":
        raise ApiError("SR_INDESTRUCTIBLE", sr)
    if _backed(store, sr):
        row = store.get("SR", sr)
        with _busy(ctx, ("SR", sr, "destroy")), _names(sr, row["uuid"]):
            await ctx.backend.sr_destroy(row["uuid"])
    _forget_sr_rows(ctx, sr)


@action("SR.scan")
async def sr_scan(ctx, sr):
    _assert_sr_op(ctx.store, sr, "scan")
    await scan_sr(ctx, sr)


@action("SR.update")
async def sr_update(ctx, sr):
    _assert_sr_op(ctx.store, sr, "update")
    await refresh_sr(ctx, sr)


@action("SR.get_supported_types")
def sr_get_supported_types(ctx):
    return supported_types(ctx)


@action("SR.probe")
def sr_probe(ctx, host, device_config, type, sm_config):
    if type.lower() not in supported_types(ctx):
        raise ApiError("SR_UNKNOWN_DRIVER", type)
    return '<?xml version="1.0" ?>\n<SRlist/>\n'


# ---------------------------------------------------------------------------------------------
# PBD
# ---------------------------------------------------------------------------------------------

@action("PBD.create")
def pbd_create(ctx, args):
    store = ctx.store
    fields = check_record(ctx, "PBD", args, ignore=("uuid", "currently_attached"))
    sr, host = fields.get("SR", NULL), fields.get("host", NULL)
    if not store.exists("SR", sr):
        raise ApiError("HANDLE_INVALID", "SR", sr)
    if not store.exists("host", host):
        raise ApiError("HANDLE_INVALID", "host", host)
    for pbd in store.field("SR", sr, "PBDs"):
        if store.get("PBD", pbd)["host"] == host:
            raise ApiError("PBD_EXISTS", sr, host, pbd)
    pbd = store.create("PBD", {**fields, "currently_attached": False})
    update_sr_ops(store, sr)
    return pbd


@action("PBD.destroy")
def pbd_destroy(ctx, pbd):
    store = ctx.store
    row = store.get("PBD", pbd)
    if row["currently_attached"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "PBD is currently attached")
    store.destroy("PBD", pbd)
    if store.exists("SR", row["SR"]):
        update_sr_ops(store, row["SR"])


@action("PBD.plug")
async def pbd_plug(ctx, pbd):
    store = ctx.store
    row = store.get("PBD", pbd)
    if row["currently_attached"]:
        return
    sr = row["SR"]
    srow = store.get("SR", sr)
    if _backed(store, sr):
        with _busy(ctx, ("SR", sr, "plug")), _names(sr, srow["uuid"]):
            await ctx.backend.sr_attach(srow["uuid"], srow["type"], dict(row["device_config"]))
    store.update("PBD", pbd, {"currently_attached": True})
    await scan_sr(ctx, sr)


@action("PBD.unplug")
async def pbd_unplug(ctx, pbd):
    store = ctx.store
    row = store.get("PBD", pbd)
    if not row["currently_attached"]:
        return
    sr = row["SR"]
    busy = [v for v in store.field("SR", sr, "VDIs") if _vdi_in_use(store, v)]
    if busy:
        raise ApiError("VDI_IN_USE", *busy)
    if _backed(store, sr):
        srow = store.get("SR", sr)
        with _busy(ctx, ("SR", sr, "unplug")), _names(sr, srow["uuid"]):
            await ctx.backend.sr_detach(srow["uuid"])
    store.update("PBD", pbd, {"currently_attached": False})
    update_sr_ops(store, sr)


# ---------------------------------------------------------------------------------------------
# VDI
# ---------------------------------------------------------------------------------------------

@action("VDI.create")
async def vdi_create(ctx, args):
    f = check_record(ctx, "VDI", args, ignore=("uuid",))
    sr = f.get("SR", NULL)
    if not ctx.store.exists("SR", sr):
        raise ApiError("HANDLE_INVALID", "SR", sr)
    return await create_vdi(ctx, sr, f.get("virtual_size", 0), f.get("name_label", ""),
                            type=f.get("type", "user"), sharable=f.get("sharable", False),
                            read_only=f.get("read_only", False),
                            other_config=f.get("other_config"),
                            name_description=f.get("name_description", ""),
                            sm_config=f.get("sm_config"), xenstore_data=f.get("xenstore_data"),
                            tags=f.get("tags"))


@action("VDI.destroy")
async def vdi_destroy(ctx, vdi):
    await destroy_vdi(ctx, vdi)


@action("VDI.clone")
async def vdi_clone(ctx, vdi, driver_params):
    return await clone_vdi(ctx, vdi)


@action("VDI.snapshot")
async def vdi_snapshot(ctx, vdi, driver_params):
    return await snapshot_vdi(ctx, vdi)


@action("VDI.copy")
async def vdi_copy(ctx, vdi, sr, base_vdi, into_vdi):
    if into_vdi == NULL and sr == NULL:
        raise ApiError("HANDLE_INVALID", "SR", sr)
    return await copy_vdi(ctx, vdi, sr, into=into_vdi)


async def _resize(ctx, vdi, size, op):
    store = ctx.store
    row = _assert_vdi_op(store, vdi, op)
    sr = row["SR"]
    sr_uuid = store.get("SR", sr)["uuid"]
    with _busy(ctx, ("VDI", vdi, op), ("SR", sr, "vdi_" + op)), \
            _names(sr, sr_uuid, [(row["location"], vdi)]):
        info = await ctx.backend.vdi_resize(sr_uuid, row["location"], size, progress=ctx.progress)
    store.update("VDI", vdi, {"virtual_size": info["virtual_size"],
                              "physical_utilisation": info["physical_utilisation"]})
    await refresh_sr(ctx, sr)


@action("VDI.resize")
async def vdi_resize(ctx, vdi, size):
    await _resize(ctx, vdi, size, "resize")


@action("VDI.resize_online")
async def vdi_resize_online(ctx, vdi, size):
    await _resize(ctx, vdi, size, "resize_online")


@action("VDI.forget")
def vdi_forget(ctx, vdi):
    store = ctx.store
    sr = store.get("VDI", vdi)["SR"]
    _assert_vdi_op(store, vdi, "forget")
    _forget_vdi_row(ctx, vdi)
    if store.exists("SR", sr):
        update_sr_ops(store, sr)


@action("VDI.update")
async def vdi_update(ctx, vdi):
    _assert_vdi_op(ctx.store, vdi, "update")
    await _refresh_vdi(ctx, vdi)


def _introduce_fields(uuid, name_label, name_description, sr, type, sharable, read_only,
                      other_config, location, xenstore_data, sm_config, managed, virtual_size,
                      physical_utilisation, metadata_of_pool, is_a_snapshot, snapshot_time,
                      snapshot_of) -> dict:
    fields = {"name_label": name_label, "name_description": name_description, "SR": sr,
              "type": type, "sharable": sharable, "read_only": read_only,
              "other_config": other_config, "location": location,
              "xenstore_data": xenstore_data, "sm_config": sm_config, "managed": managed,
              "virtual_size": virtual_size, "physical_utilisation": physical_utilisation,
              "metadata_of_pool": metadata_of_pool, "is_a_snapshot": is_a_snapshot,
              "snapshot_time": snapshot_time, "snapshot_of": snapshot_of,
              "missing": False, "storage_lock": False}
    if uuid:
        fields["uuid"] = uuid
    return fields


def _assert_new_vdi(store, fields) -> None:
    if "uuid" in fields and store.by_uuid("VDI", fields["uuid"]):
        raise ApiError("DB_UNIQUENESS_CONSTRAINT_VIOLATION", "VDI", "uuid", fields["uuid"])
    if fields["location"] and store.find("VDI", SR=fields["SR"], location=fields["location"]):
        raise ApiError("LOCATION_NOT_UNIQUE", fields["SR"], fields["location"])


@action("VDI.introduce")
async def vdi_introduce(ctx, *args):
    """A disk the backend already holds (at ``location``) gets its VDI row back."""
    store = ctx.store
    fields = _introduce_fields(*args)
    sr = fields["SR"]
    _assert_sr_op(store, sr, "vdi_introduce")
    _assert_new_vdi(store, fields)
    if _backed(store, sr):
        sr_uuid = store.get("SR", sr)["uuid"]
        try:
            info = await ctx.backend.vdi_info(sr_uuid, fields["location"])
        except ApiError as e:
            if e.code == "VDI_MISSING":
                raise ApiError("VDI_LOCATION_MISSING", sr, fields["location"]) from None
            raise
        fields.update(virtual_size=info["virtual_size"],
                      physical_utilisation=info["physical_utilisation"],
                      sm_config={**info.get("sm_config", {}), **fields["sm_config"]})
    vdi = store.create("VDI", fields)
    update_vdi_ops(store, vdi)
    await refresh_sr(ctx, sr)
    return vdi


# ---------------------------------------------------------------------------------------------
# VBD
# ---------------------------------------------------------------------------------------------

@action("VBD.create")
def vbd_create(ctx, args):
    f = check_record(ctx, "VBD", args, ignore=("uuid", "currently_attached", "device"))
    vm = f.get("VM", NULL)
    if not ctx.store.exists("VM", vm):
        raise ApiError("HANDLE_INVALID", "VM", vm)
    vbd = create_vbd(ctx, vm, f.get("VDI", NULL), f.get("userdevice", "autodetect"),
                     type=f.get("type", "Disk"), mode=f.get("mode", "RW"),
                     bootable=f.get("bootable", False), empty=f.get("empty", False),
                     unpluggable=f.get("unpluggable", True), other_config=f.get("other_config"),
                     qos_algorithm_type=f.get("qos_algorithm_type", ""),
                     qos_algorithm_params=f.get("qos_algorithm_params"))
    vdi = ctx.store.get("VBD", vbd)["VDI"]
    if vdi != NULL:
        update_vdi_ops(ctx.store, vdi)
    return vbd


@action("VBD.destroy")
def vbd_destroy(ctx, vbd):
    store = ctx.store
    row = store.get("VBD", vbd)
    if row["currently_attached"]:
        vm_uuid = store.get("VM", row["VM"])["uuid"] if store.exists("VM", row["VM"]) else ""
        raise ApiError("OPERATION_NOT_ALLOWED",
                       f"VBD '{row['uuid']}' still attached to '{vm_uuid}'")
    store.destroy("VBD", vbd)
    if row["VDI"] != NULL and store.exists("VDI", row["VDI"]):
        update_vdi_ops(store, row["VDI"])


def _assert_disk_reachable(store, row) -> None:
    """The disk behind a VBD must be there and its SR plugged."""
    if row["empty"]:
        return
    vdi = store.get("VDI", row["VDI"])
    if vdi["missing"]:
        raise ApiError("VDI_MISSING", vdi["SR"], row["VDI"])
    if not sr_attached(store, vdi["SR"]):
        raise ApiError("SR_HAS_NO_PBDS", vdi["SR"])


@action("VBD.assert_attachable")
def vbd_assert_attachable(ctx, vbd):
    store = ctx.store
    assert_vbd_op(store, vbd, "attach")
    _assert_disk_reachable(store, store.get("VBD", vbd))


def _vbd_changed(store, vbd, vdis) -> None:
    update_vbd_ops(store, vbd)
    for vdi in vdis:
        if vdi != NULL and store.exists("VDI", vdi):
            update_vdi_ops(store, vdi)


@action("VBD.plug")
async def vbd_plug(ctx, vbd):
    store = ctx.store
    assert_vbd_op(store, vbd, "plug")
    row = store.get("VBD", vbd)
    vm = store.get("VM", row["VM"])
    if vm["domain_type"] == "hvm" and row["type"] != "CD" and row["mode"] == "RO":
        raise ApiError("DISK_VBD_MUST_BE_READWRITE_FOR_HVM", vbd)
    _assert_disk_reachable(store, row)
    spec = disk_spec(store, vbd)
    vdis = [(spec["location"], row["VDI"])] if spec["location"] else []
    with _names(row["VM"], vm["uuid"], vdis):
        device = await ctx.backend.domain_attach_disk(vm["uuid"], spec)
    store.update("VBD", vbd, {"currently_attached": True, "device": device})
    _vbd_changed(store, vbd, [row["VDI"]])


async def _unplug(ctx, vbd, op: str):
    store = ctx.store
    assert_vbd_op(store, vbd, op)
    row = store.get("VBD", vbd)
    vm = store.get("VM", row["VM"])
    with _names(row["VM"], vm["uuid"]):
        await ctx.backend.domain_detach_disk(vm["uuid"], _backend_device(row))
    store.update("VBD", vbd, {"currently_attached": False})
    _vbd_changed(store, vbd, [row["VDI"]])


@action("VBD.unplug")
async def vbd_unplug(ctx, vbd):
    await _unplug(ctx, vbd, "unplug")


@action("VBD.unplug_force")
async def vbd_unplug_force(ctx, vbd):
    await _unplug(ctx, vbd, "unplug_force")


@action("VBD.insert")
async def vbd_insert(ctx, vbd, vdi):
    store = ctx.store
    assert_vbd_op(store, vbd, "insert")
    row = store.get("VBD", vbd)
    vdi_row = store.get("VDI", vdi)
    if not vdi_row["managed"]:
        raise ApiError("VDI_NOT_MANAGED", vdi)
    if vdi_row["missing"]:
        raise ApiError("VDI_MISSING", vdi_row["SR"], vdi)
    if row["currently_attached"]:
        vm_uuid = store.get("VM", row["VM"])["uuid"]
        sr_uuid = store.get("SR", vdi_row["SR"])["uuid"]
        with _names(vdi_row["SR"], sr_uuid, [(vdi_row["location"], vdi)]):
            await ctx.backend.domain_insert_cd(vm_uuid, _backend_device(row), sr_uuid,
                                               vdi_row["location"])
    store.update("VBD", vbd, {"VDI": vdi, "empty": False})
    _vbd_changed(store, vbd, [vdi])


@action("VBD.eject")
async def vbd_eject(ctx, vbd):
    store = ctx.store
    assert_vbd_op(store, vbd, "eject")
    row = store.get("VBD", vbd)
    if row["currently_attached"]:
        await ctx.backend.domain_eject_cd(store.get("VM", row["VM"])["uuid"],
                                          _backend_device(row))
    store.update("VBD", vbd, {"VDI": NULL, "empty": True})
    _vbd_changed(store, vbd, [row["VDI"]])


@action("VBD.set_mode")
def vbd_set_mode(ctx, vbd, value):
    store = ctx.store
    row = store.get("VBD", vbd)
    power = store.get("VM", row["VM"])["power_state"]
    if power != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", row["VM"], "Halted", power)
    if row["type"] == "CD" and value != "RO":
        raise ApiError("VBD_CDS_MUST_BE_READONLY")
    if value == "RW" and not row["empty"] and store.get("VDI", row["VDI"])["read_only"]:
        raise ApiError("VDI_READONLY", row["VDI"])
    store.update("VBD", vbd, {"mode": value})
