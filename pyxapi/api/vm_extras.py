"""VM messages beyond the life cycle: migration on this host, keys and triggers, plugins,
BIOS strings, agility, disaster-recovery questions, WLB and import.

Migration: xapi migrates a VM to the host it is on as a "localhost migration" (the memory is
copied into a new domain; VM.restart_device_models is one).  Here the domain's memory is saved
to a temporary image and restored into a new domain through the backend (suspend/resume), and
the VM stays Running in the API throughout.  migrate_send to this host moves the VM's disks to
the SRs of ``vdi_map`` (and its VIFs to the networks of ``vif_map``) while the domain is down.
"""
from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.parse
import urllib.request

from ..db.store import NULL
from ..errors import ApiError
from . import storage
from .alerts import vm_alert
from .registry import action
from .vm import (
    assert_can_boot_here, assert_operation, domain, domain_spec, force_state_reset,
    new_suspend_image, operation_error, set_live, settle, update_allowed_operations,
    vm_operation,
)


def ocaml_float(x: float) -> str:
    """A float as xapi prints it in error parameters (OCaml's string_of_float: "10.")."""
    s = repr(float(x))
    return s[:-1] if s.endswith(".0") else s


# ---------------------------------------------------------------------------------------------
# migration on this host
# ---------------------------------------------------------------------------------------------

async def relocate(ctx, vm: str, while_down=None) -> None:
    """Move a running VM into a new domain on this host; ``while_down`` (a coroutine function)
    runs between the save and the restore.  If the restore fails the VM is left Suspended on
    its image, so nothing of it is lost."""
    store = ctx.store
    sr, image = await new_suspend_image(ctx, vm, "Migration image",
                                        f"Memory of VM {store.get('VM', vm)['uuid']} in migration")
    sr_uuid, location = store.get("SR", sr)["uuid"], store.get("VDI", image)["location"]
    keep_image = False
    try:
        await domain(ctx, vm, "suspend", sr_uuid, location,
                     progress=lambda f: ctx.progress(0.45 * f))
        # the domain is gone: from here on the VM must come back, whatever happens
        failed = None
        if while_down is not None:
            storage.set_vbds_attached(store, vm, False)  # no domain holds its disks now
            try:
                await settle(while_down())
            except BaseException as e:
                failed = e
        try:
            domid = await settle(domain(ctx, vm, "resume", domain_spec(store, vm), sr_uuid,
                                        location, progress=lambda f: ctx.progress(0.55 + 0.45 * f)))
        except BaseException:
            keep_image = True
            store.update("VM", vm, {"suspend_VDI": image})
            force_state_reset(ctx, vm, "Suspended")
            raise
        await settle(set_live(ctx, vm, domid, "Running"))
        if failed is not None:
            raise failed
    finally:
        if not keep_image and store.exists("VDI", image):
            await asyncio.shield(storage.destroy_vdi(ctx, image))


def _check_host(ctx, vm: str, host: str) -> None:
    if host != ctx.app.host_ref:  # one host: any other is a host this server cannot reach
        raise ApiError("CANNOT_CONTACT_HOST", host)


def _assert_strict(store, vm: str, op: str) -> None:
    """Also what the guest must offer for it (xapi's strict check; VM_LACKS_FEATURE)."""
    err = operation_error(store, vm, op, strict=True)
    if err is not None:
        raise err


@action("VM.pool_migrate")
async def pool_migrate(ctx, vm, host, options):
    """To the host the VM is on: a localhost migration (a new domain, the same VM)."""
    if options.get("force", "").lower() != "true":
        _assert_strict(ctx.store, vm, "pool_migrate")
    source = ctx.store.get("VM", vm)["resident_on"]
    async with vm_operation(ctx, vm, "pool_migrate"):
        _check_host(ctx, vm, host)
        await assert_can_boot_here(ctx, vm, host)
        await relocate(ctx, vm)
    vm_alert(ctx, vm, "migrate", source=source, host=host)


@action("VM.restart_device_models")
async def restart_device_models(ctx, vm):
    """xapi does it as a localhost migration: the domain and its emulator are made anew."""
    async with vm_operation(ctx, vm, "pool_migrate"):
        await relocate(ctx, vm)


def _dest_host(ctx, dest: dict) -> str:
    """The host a migrate_send ``dest`` (host.migrate_receive's answer) names; only this
    host is reachable."""
    for key in ("master", "xenops", "session_id", "host", "SM"):
        if key not in dest:  # xapi looks the keys up unguarded
            raise ApiError("INTERNAL_ERROR", "Not_found")
    host = dest["host"]
    if not ctx.store.exists("host", host):  # another pool: its migration service is not ours
        raise ApiError("VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED")
    return host


def _plan(ctx, vm, dest, live, vdi_map, vif_map, options) -> tuple[str, list, list]:
    """Check a migrate_send as xapi's assert_can_migrate does; return (host, disk moves
    [(vbd, vdi, sr)], VIF moves [(vif, network)])."""
    store = ctx.store
    host = _dest_host(ctx, dest)
    if options.get("copy", "").lower() == "true":
        raise ApiError("OPERATION_NOT_ALLOWED", "Copy mode is disallowed on intra pool storage "
                       "migration, try efficient alternatives e.g. VM.copy/clone.")
    _assert_strict(store, vm, "migrate_send")
    disks = []
    for vbd in store.field("VM", vm, "VBDs"):
        b = store.get("VBD", vbd)
        if b["empty"] or b["type"] == "CD" or b["VDI"] not in vdi_map:
            continue
        vdi, sr = b["VDI"], vdi_map[b["VDI"]]
        if sr == NULL or not store.exists("SR", sr):
            raise ApiError("HANDLE_INVALID", "SR", sr)
        if store.get("VDI", vdi)["SR"] == sr:
            continue
        if store.get("VDI", vdi)["cbt_enabled"]:
            raise ApiError("VDI_CBT_ENABLED", vdi)
        for each in (store.get("VDI", vdi)["SR"], sr):  # from, then to: disks that snapshot
            if "vdi_snapshot" not in storage.sr_caps(store, each):
                raise ApiError("SR_DOES_NOT_SUPPORT_MIGRATION", each)
        storage.assert_sr_op(store, sr, "vdi_create")
        disks.append((vbd, vdi, sr))
    vifs = []
    for vif in store.field("VM", vm, "VIFs"):
        net = vif_map.get(vif)
        if net is not None and net != store.get("VIF", vif)["network"]:
            if not store.exists("network", net):
                raise ApiError("HANDLE_INVALID", "network", net)
            vifs.append((vif, net))
    return host, disks, vifs


@action("VM.assert_can_migrate")
async def assert_can_migrate(ctx, vm, dest, live, vdi_map, vif_map, options, vgpu_map):
    host, _, _ = _plan(ctx, vm, dest, live, vdi_map, vif_map, options)
    await assert_can_boot_here(ctx, vm, host)


@action("VM.migrate_send")
async def migrate_send(ctx, vm, dest, live, vdi_map, vif_map, options, vgpu_map,
                       vdi_format_map):
    """To this host: the disks of ``vdi_map`` are copied to their new SRs, the VBDs switched
    to the copies and the old disks destroyed; VIFs join their new networks.  A running VM
    is saved while this happens and restored on its new disks."""
    store = ctx.store
    host, disks, vifs = _plan(ctx, vm, dest, live, vdi_map, vif_map, options)
    source = store.get("VM", vm)["resident_on"]
    alive = store.get("VM", vm)["power_state"] in ("Running", "Paused")
    async with vm_operation(ctx, vm, "migrate_send"):
        await assert_can_boot_here(ctx, vm, host)

        async def move():
            await move_disks(ctx, disks)
            for vif, net in vifs:
                store.update("VIF", vif, {"network": net})

        if store.get("VM", vm)["power_state"] == "Running":
            await relocate(ctx, vm, move)
        else:
            await move()
        update_allowed_operations(store, vm)
    if alive:  # as xapi: only a live migration within the pool is announced
        vm_alert(ctx, vm, "migrate", source=source, host=host)
    return vm


async def move_disks(ctx, disks: list) -> None:
    """Copy each (vbd, vdi, sr) first (a failure removes the copies made), then switch the
    VBDs and destroy the old disks."""
    store = ctx.store
    copies = []
    try:
        for vbd, vdi, sr in disks:
            copies.append(await storage.copy_vdi(ctx, vdi, sr))
    except BaseException:
        for new in copies:
            await asyncio.shield(storage.destroy_vdi(ctx, new))
        raise
    for (vbd, vdi, _), new in zip(disks, copies):
        old = store.get("VDI", vdi)
        store.update("VDI", new, {k: old[k] for k in ("name_label", "name_description",
                                                       "other_config", "tags")})
        store.update("VBD", vbd, {"VDI": new})
        for snap in store.field("VDI", vdi, "snapshots"):  # snapshots follow their disk
            store.update("VDI", snap, {"snapshot_of": new})
        storage.update_vdi_ops(store, new)
        await storage.destroy_vdi(ctx, vdi)


# ---------------------------------------------------------------------------------------------
# keys, triggers, plugins
# ---------------------------------------------------------------------------------------------

@action("VM.send_sysrq")
async def send_sysrq(ctx, vm, key):
    async with vm_operation(ctx, vm, "send_sysrq"):
        if len(key) != 1 or not key.isascii() or not key.isalnum():
            raise ApiError("INVALID_VALUE", "key", key)
        await domain(ctx, vm, "send_sysrq", key.lower())


@action("VM.send_trigger")
async def send_trigger(ctx, vm, trigger):
    async with vm_operation(ctx, vm, "send_trigger"):
        if trigger not in ctx.backend.TRIGGERS:
            raise ApiError("INVALID_VALUE", "trigger", trigger)
        await domain(ctx, vm, "send_trigger", trigger)


PLUGIN_INTERVAL = 10.0  # xapi's vm_call_plugin_interval: one call per VM in this many seconds
_last_plugin_call: dict[str, float] = {}


def _throttle(vm: str) -> None:
    t = time.monotonic()
    for other, last in list(_last_plugin_call.items()):
        if t - last > PLUGIN_INTERVAL:
            del _last_plugin_call[other]
    wait = _last_plugin_call[vm] + PLUGIN_INTERVAL - t if vm in _last_plugin_call else 0.0
    if wait > 0:
        raise ApiError("VM_CALL_PLUGIN_RATE_LIMIT", vm, ocaml_float(PLUGIN_INTERVAL),
                       ocaml_float(round(wait, 6)))
    _last_plugin_call[vm] = t


@action("VM.call_plugin")
def call_plugin(ctx, vm, plugin, fn, args):
    """xapi's only VM plugin is "guest-agent-operation", whose functions talk to the guest
    agent through a control channel (xenstore) the backends here do not have: a guest never
    offers them."""
    assert_operation(ctx.store, vm, "call_plugin")
    if plugin != "guest-agent-operation":
        raise ApiError("XENAPI_MISSING_PLUGIN", plugin)
    _throttle(vm)
    if fn not in ("request-rdp-on", "request-rdp-off", "run-script"):
        msg = f'The requested fn "{fn}" could not be found in plugin "{plugin}".'
        raise ApiError("XENAPI_PLUGIN_FAILURE", "failed to find fn", msg, msg)
    if fn == "run-script":
        for arg in ("username", "password", "script"):
            if arg not in args:
                raise ApiError("XENAPI_PLUGIN_FAILURE", "missing argument", "",
                               f"Argument {arg} is required.")
    msg = (f'The requested fn "{fn}" of plugin "{plugin}" could not be executed for lack of '
           "guest agent control feature.")
    raise ApiError("XENAPI_PLUGIN_FAILURE", "failed to execute fn", msg, msg)


@action("VM.call_host_plugin")
async def call_host_plugin(ctx, vm, plugin, fn, args):
    """host.call_plugin on the VM's host (this one)."""
    route = ctx.app.dispatcher.routes.get("host.call_plugin")
    if route is None or not route.implemented:
        raise ApiError("XENAPI_MISSING_PLUGIN", plugin)
    result = route.handler(ctx, [ctx.app.host_ref, plugin, fn, args])
    return await result if route.is_coroutine else result


# xapi answers these itself with NOT_IMPLEMENTED and the message's short name
@action("VM.query_services")
def query_services(ctx, vm):
    raise ApiError("NOT_IMPLEMENTED", "query_services")


@action("VM.add_to_VCPUs_params_live")
def add_to_VCPUs_params_live(ctx, vm, key, value):
    raise ApiError("NOT_IMPLEMENTED", "add_to_VCPUs_params_live")


# ---------------------------------------------------------------------------------------------
# settings and questions
# ---------------------------------------------------------------------------------------------

@action("VM.copy_bios_strings")
def copy_bios_strings(ctx, vm, host):
    """The host's BIOS strings, once; the VM also gets the host as its affinity (as xapi)."""
    store = ctx.store
    if store.get("VM", vm)["bios_strings"]:
        raise ApiError("VM_BIOS_STRINGS_ALREADY_SET")
    store.update("VM", vm, {"bios_strings": dict(store.get("host", host)["bios_strings"]),
                            "affinity": host})


def _sr_properly_shared(store, sr) -> bool:
    plugged = {store.get("PBD", p)["host"] for p in store.field("SR", sr, "PBDs")
               if store.get("PBD", p)["currently_attached"]}
    return store.get("SR", sr)["shared"] and plugged >= set(store.refs("host"))


def _network_properly_shared(store, net) -> bool:
    plugged = {store.get("PIF", p)["host"] for p in store.field("network", net, "PIFs")
               if store.get("PIF", p)["currently_attached"]}
    return bool(plugged) and plugged >= set(store.refs("host"))


@action("VM.assert_agile")
def assert_agile(ctx, vm):
    """Could the VM run on any host of the pool: its disks on shared SRs, its VIFs on
    networks every host reaches (xapi's Agility.vm_assert_agile)."""
    store = ctx.store
    for vbd in store.field("VM", vm, "VBDs"):
        b = store.get("VBD", vbd)
        if b["empty"] or not store.exists("VDI", b["VDI"]):
            continue
        sr = store.get("VDI", b["VDI"])["SR"]
        if not _sr_properly_shared(store, sr):
            raise ApiError("HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", sr)
    for vif in store.field("VM", vm, "VIFs"):
        net = store.get("VIF", vif)["network"]
        if not _network_properly_shared(store, net):
            raise ApiError("HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED", net)


@action("VM.retrieve_wlb_recommendations")
def retrieve_wlb_recommendations(ctx, vm):
    """Workload balancing needs a WLB server configured and enabled on the pool; this server
    speaks no WLB protocol, so a configured one cannot be reached."""
    pool = ctx.store.get("pool", ctx.app.pool_ref)
    if not pool["wlb_url"]:
        raise ApiError("WLB_NOT_INITIALIZED")
    if not pool["wlb_enabled"]:
        raise ApiError("WLB_DISABLED")
    raise ApiError("WLB_CONNECTION_REFUSED")


# ---------------------------------------------------------------------------------------------
# UEFI secure boot
# ---------------------------------------------------------------------------------------------

@action("VM.get_secureboot_readiness")
def get_secureboot_readiness(ctx, vm):
    """As xapi: not_supported without UEFI firmware, disabled unless platform:secureboot is
    true, first_boot while the NVRAM holds no EFI variables.  Past that xapi asks varstored's
    tools to read the variables (PK, KEK, db, dbx); there is no varstore here to read them."""
    row = ctx.store.get("VM", vm)
    if row["HVM_boot_params"].get("firmware", "bios") != "uefi":
        return "not_supported"
    if row["platform"].get("secureboot", "").lower() not in ("true", "1", "on"):
        return "disabled"
    if not row["NVRAM"].get("EFI-variables"):
        return "first_boot"
    raise ApiError("INTERNAL_ERROR", "the VM's EFI variables cannot be read: no varstore here")


@action("VM.update_secureboot_certificates_on_boot")
def update_secureboot_certificates_on_boot(ctx, vm, mark):
    """Mark (or unmark) a VM whose certificates have an update available for an update at its
    next boot; any other state stays as it is."""
    state = ctx.store.get("VM", vm)["secureboot_certificates_state"]
    if mark and state == "update_available":
        ctx.store.update("VM", vm, {"secureboot_certificates_state": "update_on_boot"})
    elif not mark and state == "update_on_boot":
        ctx.store.update("VM", vm, {"secureboot_certificates_state": "update_available"})


# ---------------------------------------------------------------------------------------------
# disaster recovery: the pool recovered into is this one (session_to is a session here)
# ---------------------------------------------------------------------------------------------

def srs_required_for_recovery(store, vm: str) -> list[str]:
    """The SRs of the VM's disks that are missing or not plugged."""
    out = []
    for vbd in store.field("VM", vm, "VBDs"):
        b = store.get("VBD", vbd)
        if b["empty"] or not store.exists("VDI", b["VDI"]):
            continue
        sr = store.get("VDI", b["VDI"])["SR"]
        if sr not in out and not (store.exists("SR", sr) and storage.sr_attached(store, sr)):
            out.append(sr)
    return out


def assert_vm_recoverable(store, vm: str) -> None:
    missing = srs_required_for_recovery(store, vm)
    if missing:
        raise ApiError("VM_REQUIRES_SR", vm, missing[0])


def recover_vms(store, vms: list[str], force: bool) -> None:
    """Importing a VM's metadata into the pool that holds it already: the VM found there is
    the same version, so only ``force`` lets it through (and it stays as it is)."""
    if force:
        return
    for vm in vms:
        version = str(store.get("VM", vm)["version"])
        raise ApiError("VM_TO_IMPORT_IS_NOT_NEWER_VERSION", vm, version, version)


def _assert_not_in_appliance(store, vm: str) -> None:
    appliance = store.get("VM", vm)["appliance"]
    if store.exists("VM_appliance", appliance):
        raise ApiError("VM_IS_PART_OF_AN_APPLIANCE", vm, appliance)


@action("VM.assert_can_be_recovered")
def assert_can_be_recovered(ctx, vm, session_to):
    _assert_not_in_appliance(ctx.store, vm)
    assert_vm_recoverable(ctx.store, vm)


@action("VM.get_SRs_required_for_recovery")
def get_SRs_required_for_recovery(ctx, vm, session_to):
    return srs_required_for_recovery(ctx.store, vm)


@action("VM.recover")
def recover(ctx, vm, session_to, force):
    assert_can_be_recovered(ctx, vm, session_to)
    recover_vms(ctx.store, [vm], force)


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------

@action("VM.import")
async def vm_import(ctx, url, sr, full_restore, force):
    """xapi fetches an XVA from ``url`` (following up to 5 redirects) and reads it as a
    stream; its errors for what the URL answers are kept.  This server reads no XVA, so an
    answer it could fetch still fails, with IMPORT_ERROR."""
    def fetch():
        req = urllib.request.Request(url, method="GET")
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ApiError("INTERNAL_ERROR", f"Unsupported URI: {url}")
    try:
        await asyncio.to_thread(fetch)
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:
            raise ApiError("IMPORT_ERROR_GENERIC", "Maximum redirect limit reached") from None
        raise ApiError("IMPORT_ERROR_GENERIC", f"{e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ApiError("INTERNAL_ERROR", str(getattr(e, "reason", e))) from None
    raise ApiError("IMPORT_ERROR", "XVA streams cannot be read by this server")


@action("VM.import_convert")
def import_convert(ctx, type, username, password, sr, remote_config):
    """xapi hands the job to its "conversion" host plugin (a VMware converter appliance)."""
    raise ApiError("XENAPI_MISSING_PLUGIN", "conversion")
