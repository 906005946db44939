"""VDI and SR messages beyond create/copy/destroy: changed block tracking, revert, NBD
information, migration on this host, metadata (DR) databases, and the SR checks for HA
statefiles and database replication.

CBT is offered by the SRs that snapshot disks (the vhd-based SM drivers offer it in xapi); the
API keeps VDI.cbt_enabled, and VDI.data_destroy frees a snapshot's data, leaving a
`cbt_metadata` VDI whose row outlives its disk.
"""
from __future__ import annotations

import asyncio

from ..db.store import NULL
from ..errors import ApiError
from . import storage
from .registry import action
from .vm_extras import migrate_send

STATEFILE_SIZE = 4 * 1024 * 1024  # what an HA statefile needs free on its SR
NBD_PORT = 10809


def _assert_vdi(store, vdi, op: str) -> dict:
    """The checks every VDI operation shares (busy, in use, SR), as storage does them."""
    err = storage.vdi_op_error(store, vdi, op)
    if err:
        raise ApiError(*err)
    return store.get("VDI", vdi)


def _assert_cbt_op(store, vdi, op: str) -> dict:
    """xapi's checks for enable_cbt / disable_cbt / data_destroy, in its order."""
    row = _assert_vdi(store, vdi, op)
    sr = row["SR"]
    if "vdi_snapshot" not in storage.sr_caps(store, sr):
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)
    if row["type"] == "cbt_metadata" and op != "data_destroy":
        raise ApiError("VDI_INCOMPATIBLE_TYPE", vdi, "cbt_metadata")
    if op == "data_destroy":
        if not row["is_a_snapshot"]:
            raise ApiError("OPERATION_NOT_ALLOWED", f"VDI is not a snapshot: {vdi}")
        if not row["cbt_enabled"]:
            raise ApiError("VDI_NO_CBT_METADATA", vdi)
        err = storage.vdi_op_error(store, vdi, "destroy")
        if err and err[0] in ("VDI_IS_A_PHYSICAL_DEVICE", "SR_OPERATION_NOT_SUPPORTED",
                              "VDI_HAS_RRDS"):
            raise ApiError(*err)
    else:
        if row["is_a_snapshot"]:
            raise ApiError("OPERATION_NOT_ALLOWED", f"VDI is a snapshot: {vdi}")
        if row["type"] not in ("user", "system"):
            raise ApiError("VDI_INCOMPATIBLE_TYPE", vdi, row["type"])
        if row["on_boot"] == "reset":
            raise ApiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")
    if not storage.sr_attached(store, sr):
        raise ApiError("SR_HAS_NO_PBDS", sr)
    return row


@action("VDI.enable_cbt")
def enable_cbt(ctx, vdi):
    _assert_cbt_op(ctx.store, vdi, "enable_cbt")
    ctx.store.update("VDI", vdi, {"cbt_enabled": True})


@action("VDI.disable_cbt")
def disable_cbt(ctx, vdi):
    _assert_cbt_op(ctx.store, vdi, "disable_cbt")
    ctx.store.update("VDI", vdi, {"cbt_enabled": False})


@action("VDI.data_destroy")
async def data_destroy(ctx, vdi):
    """The snapshot's data goes; its row stays, of type cbt_metadata (what list_changed_blocks
    needs).  Refused while a VBD still points at it."""
    store = ctx.store
    row = _assert_cbt_op(store, vdi, "data_destroy")
    if row["type"] == "cbt_metadata":
        return  # already done
    if not row["managed"]:
        raise ApiError("VDI_NOT_MANAGED", vdi)
    if store.field("VDI", vdi, "VBDs"):
        raise ApiError("VDI_IN_USE", vdi, "data_destroy")
    sr = row["SR"]
    await storage.erase_disk(ctx, vdi)
    store.update("VDI", vdi, {"type": "cbt_metadata", "physical_utilisation": 0})
    storage.update_vdi_ops(store, vdi)
    await storage.refresh_sr(ctx, sr)


@action("VDI.set_on_boot")
def set_on_boot(ctx, vdi, value):
    """"reset" makes the disk go back to its content at every boot: refused while CBT tracks
    it (VDI_CBT_ENABLED), as for a disk in use or on an SR that cannot."""
    store = ctx.store
    row = _assert_vdi(store, vdi, "set_on_boot")
    if not storage.sr_attached(store, row["SR"]):
        raise ApiError("SR_HAS_NO_PBDS", row["SR"])
    store.update("VDI", vdi, {"on_boot": value})
    storage.update_vdi_ops(store, vdi)


@action("VDI.revert")
async def revert(ctx, snapshot):
    """The disk the snapshot was taken of gets the snapshot's content back, keeping its own
    ref and uuid (its later snapshots stay as they are)."""
    store = ctx.store
    snap = store.get("VDI", snapshot)
    if not snap["is_a_snapshot"]:
        raise ApiError("OPERATION_NOT_ALLOWED", f"VDI is not a snapshot: {snapshot}")
    vdi = snap["snapshot_of"]
    if not store.exists("VDI", vdi):
        raise ApiError("HANDLE_INVALID", "VDI", vdi)
    if snap["type"] == "cbt_metadata":
        raise ApiError("VDI_INCOMPATIBLE_TYPE", snapshot, "cbt_metadata")
    _assert_vdi(store, snapshot, "copy")
    if storage.vdi_in_use(store, vdi):
        raise ApiError("VDI_IN_USE", vdi, "revert_to")
    target = _assert_vdi(store, vdi, "update")
    if target["read_only"]:
        raise ApiError("VDI_READONLY", vdi)
    if target["SR"] != snap["SR"]:
        raise ApiError("UNIMPLEMENTED_IN_SM_BACKEND", target["SR"])
    await storage.copy_vdi(ctx, snapshot, target["SR"], into=vdi)


@action("VDI.get_nbd_info")
def get_nbd_info(ctx, vdi):
    """Where the disk would be served over NBD: one entry per IP of this host on a network
    whose purpose is nbd or insecure_nbd (none: an empty list)."""
    store = ctx.store
    row = store.get("VDI", vdi)
    if row["type"] == "cbt_metadata":
        raise ApiError("VDI_INCOMPATIBLE_TYPE", vdi, "cbt_metadata")
    hosts = {store.get("PBD", p)["host"] for p in store.field("SR", row["SR"], "PBDs")
             if store.get("PBD", p)["currently_attached"]} if store.exists("SR", row["SR"]) else set()
    nbd_nets = {n for n in store.refs("network")
                if {"nbd", "insecure_nbd"} & set(store.get("network", n)["purpose"])}
    out = []
    for host in sorted(hosts):
        ips = []
        for pif in store.field("host", host, "PIFs"):
            p = store.get("PIF", pif)
            if p["currently_attached"] and p["network"] in nbd_nets:
                ips += [ip for ip in [p["IP"], *p["IPv6"]] if ip]
        if not ips:
            continue
        cert, subject = _server_certificate(ctx, host)
        for ip in ips:
            out.append({"exportname": f"/{row['uuid']}?session_id={ctx.session}",
                        "address": ip, "port": NBD_PORT, "cert": cert, "subject": subject})
    return out


def _server_certificate(ctx, host: str) -> tuple[str, str]:
    """The host's TLS certificate (PEM) and the name a client should check in it."""
    path = ctx.app.state_dir / "server.crt" if ctx.app.state_dir else None
    if path is None or not path.exists():
        return "", ctx.store.get("host", host)["hostname"]
    pem = path.read_text()
    from cryptography import x509
    try:
        names = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except (ValueError, x509.ExtensionNotFound):
        names = []
    plain = [n for n in names if "*" not in n]
    return pem, (plain[0] if plain else names[-1] if names else
                 ctx.store.get("host", host)["hostname"])


@action("VDI.pool_migrate")
async def pool_migrate(ctx, vdi, sr, options):
    """Move a disk in use by a running VM to another SR: a migrate_send of its VM to this host
    with only that disk mapped; answers the disk's new VDI."""
    store = ctx.store
    row = store.get("VDI", vdi)
    if row["type"] == "cbt_metadata":
        raise ApiError("VDI_INCOMPATIBLE_TYPE", vdi, "cbt_metadata")
    if row["cbt_enabled"]:
        raise ApiError("VDI_CBT_ENABLED", vdi)
    attached = [b for b in store.field("VDI", vdi, "VBDs")
                if store.get("VBD", b)["currently_attached"]]
    if not attached:
        raise ApiError("VDI_NEEDS_VM_FOR_MIGRATE", vdi)
    vbd = attached[0]
    vm = store.get("VBD", vbd)["VM"]
    host = ctx.app.host_ref
    dest = {"host": host, "master": "", "xenops": "", "session_id": ctx.session, "SM": ""}
    await migrate_send(ctx, vm, dest, True, {vdi: sr}, {}, dict(options), {}, {})
    return store.get("VBD", vbd)["VDI"]


@action("VDI.open_database")
def open_database(ctx, vdi):
    """A DR metadata VDI holds a pool database; this server writes none into VDIs, so none
    can be read from one."""
    vtype = ctx.store.get("VDI", vdi)["type"]
    if vtype != "metadata":
        raise ApiError("VDI_INCOMPATIBLE_TYPE", vdi, vtype)
    raise ApiError("COULD_NOT_IMPORT_DATABASE", "no database found on the VDI")


@action("VDI.read_database_pool_uuid")
def read_database_pool_uuid(ctx, vdi):
    """The pool whose database a metadata VDI holds, "" when it holds none (here: always)."""
    ctx.store.get("VDI", vdi)
    return ""


# ---------------------------------------------------------------------------------------------
# SR
# ---------------------------------------------------------------------------------------------

@action("SR.make")
def sr_make(ctx, host, device_config, physical_size, name_label, name_description, type,
            content_type, sm_config):
    raise ApiError("MESSAGE_DEPRECATED")


@action("SR.probe_ext")
def sr_probe_ext(ctx, host, device_config, type, sm_config):
    """What SRs the device of ``device_config`` holds; the backends probe no devices, so none
    is ever found (as SR.probe)."""
    if type.lower() not in storage.supported_types(ctx):
        raise ApiError("SR_UNKNOWN_DRIVER", type)
    return []


def _assert_plugged_everywhere(store, sr) -> None:
    """A PBD on every host, every one plugged (xapi: SR_HAS_NO_PBDS otherwise)."""
    pbds = store.field("SR", sr, "PBDs")
    if {store.get("PBD", p)["host"] for p in pbds} < set(store.refs("host")):
        raise ApiError("SR_HAS_NO_PBDS", sr)
    if not all(store.get("PBD", p)["currently_attached"] for p in pbds):
        raise ApiError("SR_HAS_NO_PBDS", sr)


@action("SR.assert_can_host_ha_statefile")
def assert_can_host_ha_statefile(ctx, sr):
    store = ctx.store
    _assert_plugged_everywhere(store, sr)
    if "vdi_create" not in storage.sr_caps(store, sr) or store.get("SR", sr)["content_type"] == "iso":
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)
    row = store.get("SR", sr)
    if row["physical_size"] - row["physical_utilisation"] < STATEFILE_SIZE:
        raise ApiError("SR_SOURCE_SPACE_INSUFFICIENT", sr)


def _assert_supports_replication(store, sr) -> None:
    """xapi needs the SM driver's SR_METADATA feature: none of the SR types here has it (no
    pool database is written into a VDI)."""
    _assert_plugged_everywhere(store, sr)
    raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)


@action("SR.assert_supports_database_replication")
def assert_supports_database_replication(ctx, sr):
    _assert_supports_replication(ctx.store, sr)


@action("SR.enable_database_replication")
def enable_database_replication(ctx, sr):
    _assert_supports_replication(ctx.store, sr)


@action("SR.disable_database_replication")
async def disable_database_replication(ctx, sr):
    """The SR's metadata VDIs of this pool go (there are none unless made by hand)."""
    store = ctx.store
    pool = ctx.app.pool_ref
    for vdi in list(store.field("SR", sr, "VDIs")):
        row = store.get("VDI", vdi)
        if row["type"] == "metadata" and row["metadata_of_pool"] == pool:
            for vbd in store.field("VDI", vdi, "VBDs"):
                store.destroy("VBD", vbd)
            await storage.destroy_vdi(ctx, vdi)
