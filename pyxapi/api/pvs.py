"""PVS (Citrix Provisioning) accelerator: sites, the PVS servers they stream from and the
proxies that cache a VM's streamed disk on its first VIF. They need the openvswitch
network backend, which this host has."""
from __future__ import annotations

import ipaddress

from ..errors import ApiError
from .registry import action


def _assert_vswitch(store) -> None:
    for h in store.refs("host"):
        if store.get("host", h)["software_version"].get("network_backend") != "openvswitch":
            raise ApiError("OPENVSWITCH_NOT_ACTIVE")


@action("PVS_site.introduce")
def site_introduce(ctx, name_label, name_description, PVS_uuid):
    _assert_vswitch(ctx.store)
    return ctx.store.create("PVS_site", {"name_label": name_label,
                                         "name_description": name_description,
                                         "PVS_uuid": PVS_uuid})


@action("PVS_site.forget")
def site_forget(ctx, self):
    store = ctx.store
    running = [p for p in store.field("PVS_site", self, "proxies")
               if store.get("PVS_proxy", p)["currently_attached"]]
    if running:
        raise ApiError("PVS_SITE_CONTAINS_RUNNING_PROXIES", *running)
    servers = store.field("PVS_site", self, "servers")
    if servers:
        raise ApiError("PVS_SITE_CONTAINS_SERVERS", *servers)
    for storage in store.field("PVS_site", self, "cache_storage"):
        store.destroy("PVS_cache_storage", storage)
    store.destroy("PVS_site", self)


def _assert_port(name: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ApiError("VALUE_NOT_SUPPORTED", name, str(port), "Port out of range")


@action("PVS_server.introduce")
def server_introduce(ctx, addresses, first_port, last_port, site):
    store = ctx.store
    _assert_vswitch(store)
    for a in addresses:
        try:
            ipaddress.IPv4Address(a)
        except ValueError:
            raise ApiError("INVALID_IP_ADDRESS_SPECIFIED", "addresses") from None
    taken = {a for s in store.refs("PVS_server") for a in store.get("PVS_server", s)["addresses"]}
    in_use = [a for a in dict.fromkeys(addresses) if a in taken]
    if in_use:
        raise ApiError("PVS_SERVER_ADDRESS_IN_USE", *in_use)
    _assert_port("first_port", first_port)
    _assert_port("last_port", last_port)
    if last_port < first_port:
        raise ApiError("VALUE_NOT_SUPPORTED", "last_port", str(last_port),
                       "last_port smaller than first_port")
    return store.create("PVS_server", {"addresses": list(dict.fromkeys(addresses)),
                                       "first_port": first_port, "last_port": last_port,
                                       "site": site})


@action("PVS_server.forget")
def server_forget(ctx, self):
    ctx.store.destroy("PVS_server", self)


@action("PVS_proxy.create")
def proxy_create(ctx, site, VIF):
    """The proxy starts caching when its VM runs; it is made stopped."""
    store = ctx.store
    _assert_vswitch(store)
    if store.get("VIF", VIF)["device"] != "0":
        raise ApiError("PVS_VIF_MUST_BE_FIRST_DEVICE")
    existing = store.find("PVS_proxy", VIF=VIF)
    if existing:
        raise ApiError("PVS_PROXY_ALREADY_PRESENT", *existing)
    return store.create("PVS_proxy", {"site": site, "VIF": VIF, "currently_attached": False,
                                      "status": "stopped"})
