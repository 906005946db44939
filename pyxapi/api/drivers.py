"""Multi-version host drivers: Host_driver.select/deselect/rescan, Driver_variant.select.

xapi learns a host's drivers from its host-driver-tool (`list`: each driver with its variants,
the one selected for the next boot and the one loaded now) and changes the selection with the
tool (`select`, `deselect`); without a real tool it installs a mock one answering a fixed list.
This host has no driver tool either: TOOL below is what it answers, and a selection is kept in
the rows themselves (the tool's own record of it), so a rescan keeps it. A new selection
takes effect at the next boot: active_variant stays until then.
"""
from __future__ import annotations

from ..db.store import NULL
from ..errors import ApiError
from .bootstrap import on_loop_start_hook
from .registry import action

# name -> (type, description, {variant: (version, hardware_present, priority, status)},
#          selected, active)
TOOL = {
    "intel-ice": ("network", "Intel E810 Ethernet", {
        "generic": ("1.11.17", True, 100.0, "production"),
        "oem": ("1.12.7", True, 80.0, "beta")}, "generic", "generic"),
    "broadcom-bnxt-en": ("network", "Broadcom NetXtreme-C/E", {
        "generic": ("1.10.2", False, 100.0, "production")}, None, None),
    "megaraid-sas": ("storage", "Broadcom MegaRAID SAS", {
        "generic": ("07.727.03.00", True, 100.0, "production"),
        "vendor": ("07.729.00.00", True, 90.0, "certified")}, "generic", "generic"),
}


def _drivers_of(store, host: str) -> list[str]:
    return [d for d, row in store.tables["Host_driver"].items() if row["host"] == host]


def _variant_named(store, driver: str, name: str | None) -> str:
    for v in store.field("Host_driver", driver, "variants"):
        if store.get("Driver_variant", v)["name"] == name:
            return v
    return NULL


def scan(store, host: str) -> None:
    """The host's drivers as the tool lists them; selections made earlier are the tool's."""
    kept = {}
    for d in _drivers_of(store, host):
        row = store.get("Host_driver", d)
        kept[row["name"]] = tuple(store.get("Driver_variant", v)["name"]
                                  if store.exists("Driver_variant", v) else None
                                  for v in (row["selected_variant"], row["active_variant"]))
        for v in store.field("Host_driver", d, "variants"):
            store.destroy("Driver_variant", v)
        store.destroy("Host_driver", d)
    for name, (kind, descr, variants, selected, active) in TOOL.items():
        selected, active = kept.get(name, (selected, active))
        d = store.create("Host_driver", {
            "host": host, "name": name, "friendly_name": name, "type": kind,
            "description": descr, "info": descr, "active_variant": NULL,
            "selected_variant": NULL})
        for vname, (version, present, priority, status) in variants.items():
            store.create("Driver_variant", {"driver": d, "name": vname, "version": version,
                                            "hardware_present": present,
                                            "priority": priority, "status": status})
        store.update("Host_driver", d, {"selected_variant": _variant_named(store, d, selected),
                                        "active_variant": _variant_named(store, d, active)})


@on_loop_start_hook
async def first_scan(app) -> None:
    """The host lists its drivers when it first starts (or first starts with this code)."""
    if not _drivers_of(app.store, app.host_ref):
        scan(app.store, app.host_ref)


@action("Host_driver.rescan", "host.rescan_drivers")
def rescan(ctx, host):
    scan(ctx.store, host)


@action("Host_driver.select")
def select(ctx, self, variant):
    if variant not in ctx.store.field("Host_driver", self, "variants"):
        raise ApiError("INVALID_VALUE", "variant", variant)
    ctx.store.update("Host_driver", self, {"selected_variant": variant})


@action("Driver_variant.select")
def select_variant(ctx, self):
    ctx.store.update("Host_driver", ctx.store.get("Driver_variant", self)["driver"],
                     {"selected_variant": self})


@action("Host_driver.deselect")
def deselect(ctx, self):
    ctx.store.update("Host_driver", self, {"selected_variant": NULL, "active_variant": NULL})
