"""Storage: SR, PBD, VDI and VBD actions, and the helpers the VM actions call.

Disks live in the backend, named by (SR uuid, VDI.location); the store keeps the API view.
Every change to disks re-reads the SR's usage from the backend so that
SR.physical_utilisation / virtual_allocation always say what the backend says.
"""
from __future__ import annotations

import contextlib

from ..backends.base import device_name
from ..db.store import NULL, now
from ..errors import ApiError
from .generic import check_record
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

_VDI_OPS_OF_SR = {"clone": "vdi_clone", "snapshot": "vdi_snapshot", "copy": "vdi_copy",
                  "resize": "vdi_resize", "destroy": "vdi_destroy", "update": "vdi_update",
                  "mirror": "vdi_mirror", "set_on_boot": "vdi_set_on_boot",
                  "resize_online": "vdi_resize_online"}
_VDI_OPS = ["clone", "copy", "snapshot", "resize", "destroy", "forget", "update",
            "generate_config", "mirror", "set_on_boot"]
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


def _backed(store, sr) -> bool:
    return store.get("SR", sr)["type"] not in DEVICE_SR_TYPES


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


def _vm_live(store, vm) -> bool:
    return store.get("VM", vm)["power_state"] in ("Running", "Paused")


def _vdi_in_use(store, vdi) -> list[str]:
    """VBDs attached to a live domain."""
    return [b for b in store.field("VDI", vdi, "VBDs")
            if store.get("VBD", b)["currently_attached"]]


# ---------------------------------------------------------------------------------------------
# allowed_operations kept current
# ---------------------------------------------------------------------------------------------

def update_sr_ops(store, sr) -> None:
    row = store.get("SR", sr)
    caps = sr_caps(store, sr)
    attached = sr_attached(store, sr)
    ops = [op for op in caps if attached or op not in _NEEDS_ATTACHED]
    if attached:
        ops = [op for op in ops if op not in ("plug", "destroy", "forget")]
    elif "plug" not in ops and store.field("SR", sr, "PBDs"):
        ops.append("plug")
    if row["current_operations"]:
        ops = []
    if sorted(ops) != sorted(row["allowed_operations"]):
        store.update("SR", sr, {"allowed_operations": ops})


def update_vdi_ops(store, vdi) -> None:
    row = store.get("VDI", vdi)
    sr = row["SR"]
    if not store.exists("SR", sr):
        ops = ["forget"]
    else:
        caps = sr_caps(store, sr)
        ops = [op for op in _VDI_OPS if _VDI_OPS_OF_SR.get(op, op) in caps
               or op in ("forget", "generate_config")]
        if store.get("SR", sr)["type"] in DEVICE_SR_TYPES:
            ops = ["forget"]
        if _vdi_in_use(store, vdi):
            ops = [op for op in ops if op not in ("destroy", "resize", "forget")]
        if row["current_operations"]:
            ops = []
    if sorted(ops) != sorted(row["allowed_operations"]):
        store.update("VDI", vdi, {"allowed_operations": ops})


def update_vbd_ops(store, vbd) -> None:
    row = store.get("VBD", vbd)
    power = store.get("VM", row["VM"])["power_state"] if store.exists("VM", row["VM"]) else "Halted"
    cd = row["type"] == "CD"
    ops = []
    if power == "Halted":
        ops = ["attach"]
    elif power in ("Running", "Paused"):
        if row["currently_attached"]:
            ops = ["unplug", "unplug_force"] if row["unpluggable"] else ["unplug_force"]
        else:
            ops = ["plug"]
    if cd and power != "Suspended":
        ops.append("insert" if row["empty"] else "eject")
    if row["current_operations"]:
        ops = []
    if sorted(ops) != sorted(row["allowed_operations"]):
        store.update("VBD", vbd, {"allowed_operations": ops})


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
    """Size and utilisation of one disk as the backend has it now (chains move data about)."""
    row = ctx.store.get("VDI", vdi)
    sr_uuid = ctx.store.get("SR", row["SR"])["uuid"]
    with _names(row["SR"], sr_uuid, [(row["location"], vdi)]):
        info = await ctx.backend.vdi_info(sr_uuid, row["location"])
    ctx.store.update("VDI", vdi, {"virtual_size": info["virtual_size"],
                                  "physical_utilisation": info["physical_utilisation"]})


async def _refresh_sr_vdis(ctx, sr) -> None:
    """After a snapshot/clone/destroy other disks of a chain change utilisation."""
    for vdi in ctx.store.field("SR", sr, "VDIs"):
        row = ctx.store.get("VDI", vdi)
        if row["managed"] and not row["missing"]:
            try:
                await _refresh_vdi(ctx, vdi)
            except ApiError:
                pass  # gone from the backend: SR.scan will say so
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
    """The checks xapi makes before any disk operation (VDI_MISSING, physical devices,
    SR capability, in use)."""
    row = store.get("VDI", vdi)
    sr = row["SR"]
    if not store.exists("SR", sr):
        raise ApiError("HANDLE_INVALID", "SR", sr)
    if row["missing"]:
        raise ApiError("VDI_MISSING", sr, vdi)
    if store.get("SR", sr)["type"] in DEVICE_SR_TYPES and op != "forget":
        raise ApiError("VDI_IS_A_PHYSICAL_DEVICE", vdi)
    if not row["managed"] and op != "forget":
        raise ApiError("VDI_NOT_MANAGED", vdi)
    if op != "forget":
        _assert_sr_op(store, sr, _VDI_OPS_OF_SR.get(op, "vdi_" + op))
    if op in ("destroy", "resize", "forget") and _vdi_in_use(store, vdi):
        raise ApiError("VDI_IN_USE", vdi, op)
    if row["current_operations"]:
        task, running = next(iter(row["current_operations"].items()))
        raise ApiError("OTHER_OPERATION_IN_PROGRESS", "VDI", vdi, running, task)
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
    with _names(sr, sr_uuid):
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
    with _names(sr, sr_uuid, [(row["location"], vdi)]):
        info = await call(sr_uuid, row["location"], progress=ctx.progress)
    name_label = fields.pop("name_label", None) or row["name_label"]
    keep = {k: row[k] for k in ("name_description", "type", "sharable", "other_config",
                                "xenstore_data", "tags", "on_boot", "allow_caching")}
    keep.update(fields)
    keep["read_only"] = row["read_only"] if op == "clone" else info["read_only"]
    keep["sm_config"] = {**row["sm_config"], **info.get("sm_config", {})}
    new = _new_vdi_row(ctx, sr, info, name_label, **keep)
    await _refresh_sr_vdis(ctx, sr)
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
                            snapshot_time=now())


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
    with _names(sr, dst_uuid, vdis), _names(src_sr, src_uuid):
        info = await ctx.backend.vdi_copy(
            src_uuid, row["location"], dst_uuid,
            dst_location=store.get("VDI", into)["location"] if into != NULL else None,
            progress=ctx.progress)
    if into != NULL:
        store.update("VDI", into, {"virtual_size": info["virtual_size"],
                                   "physical_utilisation": info["physical_utilisation"]})
        await refresh_sr(ctx, sr)
        return into
    new = _new_vdi_row(ctx, sr, info, row["name_label"],
                       **{k: row[k] for k in ("name_description", "type", "sharable",
                                              "other_config", "xenstore_data", "tags")})
    await refresh_sr(ctx, sr)
    return new


async def destroy_vdi(ctx, vdi) -> None:
    """Erase the disk and its VDI row (VDI_IN_USE while a running VM uses it).  Its VBDs
    on halted VMs are destroyed with it, as xapi does."""
    store = ctx.store
    row = _assert_vdi_op(store, vdi, "destroy")
    sr = row["SR"]
    sr_uuid = store.get("SR", sr)["uuid"]
    if _backed(store, sr):
        with _names(sr, sr_uuid, [(row["location"], vdi)]):
            await ctx.backend.vdi_destroy(sr_uuid, row["location"], progress=ctx.progress)
    _forget_vdi_row(ctx, vdi)
    await _refresh_sr_vdis(ctx, sr)


def _forget_vdi_row(ctx, vdi) -> None:
    store = ctx.store
    for vbd in store.field("VDI", vdi, "VBDs"):
        vm = store.get("VBD", vbd)["VM"]
        if store.get("VBD", vbd)["type"] == "CD" and store.exists("VM", vm):
            store.update("VBD", vbd, {"VDI": NULL, "empty": True})  # the drive stays
            update_vbd_ops(store, vbd)
        else:
            store.destroy("VBD", vbd)
    for snap in store.field("VDI", vdi, "snapshots"):
        store.update("VDI", snap, {"snapshot_of": NULL})
    store.destroy("VDI", vdi)


def _userdevices(store, vm) -> set[str]:
    return {store.get("VBD", b)["userdevice"] for b in store.field("VM", vm, "VBDs")}


def allowed_vbd_devices(store, vm) -> list[str]:
    """Free userdevice numbers, lowest first (what get_allowed_VBD_devices answers)."""
    used = _userdevices(store, vm)
    limit = 255 if store.get("VM", vm)["domain_type"] != "pv" else 16
    return [str(i) for i in range(limit) if str(i) not in used]


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
    free = allowed_vbd_devices(store, vm)
    if userdevice == "autodetect":
        if not free:
            raise ApiError("INVALID_DEVICE", userdevice)
        userdevice = free[0]
    elif not userdevice.isdigit() or int(userdevice) > 255:
        raise ApiError("INVALID_DEVICE", userdevice)
    userdevice = str(int(userdevice))
    if userdevice in _userdevices(store, vm):
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
    spec = {"device": row["userdevice"], "mode": row["mode"], "type": row["type"],
            "bootable": row["bootable"], "sr": None, "location": None}
    if not row["empty"] and store.exists("VDI", row["VDI"]):
        vdi = store.get("VDI", row["VDI"])
        spec["sr"] = store.get("SR", vdi["SR"])["uuid"]
        spec["location"] = vdi["location"]
    return spec


def disk_specs(store, vm) -> list[dict]:
    return [disk_spec(store, b) for b in sorted(store.field("VM", vm, "VBDs"),
                                                 key=lambda b: int(store.get("VBD", b)["userdevice"]))]


def set_vbds_attached(store, vm, attached: bool) -> None:
    """VBDs follow the VM: all attached when a domain is built, none when it goes away.
    Call after every power-state change (pause/unpause too: refreshes allowed_operations)."""
    for vbd in store.field("VM", vm, "VBDs"):
        row = store.get("VBD", vbd)
        changes = {}
        if attached is not None and row["currently_attached"] != attached:
            changes["currently_attached"] = attached
        dev = device_name(row["userdevice"]) if attached else row["device"]
        if attached and row["device"] != dev:
            changes["device"] = dev
        if changes:
            store.update("VBD", vbd, changes)
        update_vbd_ops(store, vbd)
        if row["VDI"] != NULL and store.exists("VDI", row["VDI"]):
            update_vdi_ops(store, row["VDI"])
