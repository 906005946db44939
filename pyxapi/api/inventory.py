"""What a freshly installed host has besides its skeleton (bootstrap.py): storage, networks,
VM templates; and on every start, the SRs attached again in the backend.

Names and shapes follow an XCP-ng 8.3 install: "Local storage" (ext, thin), "XCP-ng Tools",
the udev SRs "DVD drives" and "Removable storage", an "ISO library", one "Pool-wide network
associated with ethN" per NIC (bridge xenbrN) and the "Host internal management network".
"""
from __future__ import annotations

import json
import logging
import pathlib

from ..db.store import NULL, now
from ..errors import ApiError
from . import network, storage
from .bootstrap import on_first_start, on_loop_start_hook

log = logging.getLogger("pyxapi.inventory")

TEMPLATES = pathlib.Path(__file__).parent.parent / "model" / "data" / "templates.json"
LOCAL_SR_TYPE = "ext"
LOCAL_DISK = "/dev/disk/by-id/nvme-SAMSUNG_MZQL2960HCJR-00A07_S64FNE0R812345-part3"

# (name_label, name_description, type, content_type, device_config, other_config, sm_config)
STORAGE = [
    ("Local storage", "", LOCAL_SR_TYPE, "user", {"device": LOCAL_DISK},
     {"i18n-key": "local-storage", "i18n-original-value-name_label": "Local storage"},
     {"devserial": "nvme-SAMSUNG_MZQL2960HCJR-00A07_S64FNE0R812345"}),
    ("XCP-ng Tools", "XCP-ng Tools ISOs", "iso", "iso",
     {"location": "/opt/xensource/packages/iso", "legacy_mode": "true"},
     {"xensource_internal": "true", "xenserver_tools_sr": "true", "i18n-key": "xenserver-tools",
      "i18n-original-value-name_label": "XCP-ng Tools",
      "i18n-original-value-name_description": "XCP-ng Tools ISOs"}, {}),
    ("ISO library", "Installation media", "iso", "iso",
     {"location": "/var/opt/iso", "legacy_mode": "true"}, {}, {}),
    ("DVD drives", "Physical DVD drives", "udev", "iso", {"location": "/dev/xapi/cd"},
     {"i18n-key": "local-hotplug-cd", "i18n-original-value-name_label": "DVD drives",
      "i18n-original-value-name_description": "Physical DVD drives"}, {"type": "cd"}),
    ("Removable storage", "", "udev", "disk", {"location": "/dev/xapi/block"},
     {"i18n-key": "local-hotplug-disk", "i18n-original-value-name_label": "Removable storage"},
     {"type": "block"}),
]

INTERNAL_NETWORK = {
    "name_label": "Host internal management network",
    "name_description": "Network on which guests will be assigned a private link-local IP "
                        "address which can be used to talk XenAPI",
    "bridge": "xenapi",
    "MTU": 1500,
    "other_config": {"is_guest_installer_network": "true",
                     "is_host_internal_management_network": "true",
                     "ip_begin": "169.254.0.1", "ip_end": "169.254.255.254",
                     "netmask": "255.255.0.0"},
}

TEMPLATE_OPERATIONS = ["changing_NVRAM", "changing_dynamic_range", "changing_shadow_memory",
                       "changing_static_range", "changing_memory_limits", "changing_VCPUs",
                       "make_into_template", "destroy", "export", "provision", "clone", "copy"]


def _ctx(app):
    from ..server.dispatch import Context
    return Context(app, None)


def load_templates() -> list[dict]:
    return json.loads(TEMPLATES.read_text())["templates"]


# ---------------------------------------------------------------------------------------------
# first start
# ---------------------------------------------------------------------------------------------

@on_first_start
async def make_inventory(app) -> None:
    ctx = _ctx(app)
    info = await app.backend.host_info() if app.backend is not None else {}
    if app.backend is not None:
        await _make_storage(ctx, app)
    _make_networks(ctx, app, info.get("pifs", []))
    _make_templates(ctx)


async def _make_storage(ctx, app) -> None:
    store, host = ctx.store, app.host_ref
    srs = {}
    supported = storage.supported_types(ctx)
    for name, desc, sr_type, content, dconf, oc, smc in STORAGE:
        if sr_type not in supported:
            continue
        try:
            srs[name] = await storage.create_sr(
                ctx, host, dconf, 0, name, desc, sr_type, content, False, smc, other_config=oc,
                is_tools_sr=oc.get("xenserver_tools_sr") == "true")
        except (ApiError, OSError) as e:  # a backend without this device: the host still starts
            log.warning("first start: no SR %r: %s", name, e)
    local = srs.get("Local storage")
    if local is None:
        return
    store.update("pool", app.pool_ref, {"default_SR": local, "suspend_image_SR": local,
                                        "crash_dump_SR": local})
    store.update("host", host, {"suspend_image_sr": local, "crash_dump_sr": local})


def _make_networks(ctx, app, pifs: list[dict]) -> None:
    for nic in pifs:
        network.make_physical_pif(ctx.store, app.host_ref, nic)
    ctx.store.create("network", {**INTERNAL_NETWORK, "managed": True})


def _make_templates(ctx) -> None:
    store = ctx.store
    t = now()
    for spec in load_templates():
        metrics = store.create("VM_metrics", {
            "memory_actual": 0, "VCPUs_number": 0, "state": [], "start_time": t,
            "install_time": t, "last_updated": t, "current_domain_type": "unspecified"})
        fields = {
            "is_a_template": True, "is_default_template": True, "power_state": "Halted",
            "domid": -1, "resident_on": NULL, "affinity": NULL, "metrics": metrics,
            "guest_metrics": NULL, "user_version": 1, "allowed_operations": TEMPLATE_OPERATIONS,
            "memory_target": 0, "is_control_domain": False,
        }
        fields.update(spec)
        store.create("VM", fields)


# ---------------------------------------------------------------------------------------------
# every start: as xapi does, plug every PBD of the host again and resync the SRs' disks
# ---------------------------------------------------------------------------------------------

@on_loop_start_hook
async def plug_all_pbds(app) -> None:
    if app.backend is None:
        return
    ctx = _ctx(app)
    store = ctx.store
    for cls in ("SR", "VDI"):
        for ref in store.refs(cls):
            if store.get(cls, ref)["current_operations"]:   # their tasks died with us
                store.update(cls, ref, {"current_operations": {}})
                (storage.update_sr_ops if cls == "SR" else storage.update_vdi_ops)(store, ref)
    for pbd in store.field("host", app.host_ref, "PBDs"):
        prow = store.get("PBD", pbd)
        sr = prow["SR"]
        if not store.exists("SR", sr):
            continue
        row = store.get("SR", sr)
        try:
            if storage._backed_type(row["type"]):
                await ctx.backend.sr_attach(row["uuid"], row["type"], dict(prow["device_config"]))
            if not prow["currently_attached"]:
                store.update("PBD", pbd, {"currently_attached": True})
            await storage.scan_sr(ctx, sr)
        except ApiError as e:
            log.warning("SR %s (%s) could not be plugged: %s", row["name_label"], row["uuid"], e)
            store.update("PBD", pbd, {"currently_attached": False})
            storage.update_sr_ops(store, sr)
