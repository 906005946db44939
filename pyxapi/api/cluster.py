"""Clustering (corosync): Cluster and Cluster_host.

The pool has one host, so a cluster has one member: quorate as soon as it is made. The
PIF it runs on must stay plugged (disallow_unplug) and have an IP address, as xapi asks.
"""
from __future__ import annotations

import secrets

from ..db.store import now
from ..errors import ApiError
from .registry import action

STACKS = {"corosync": 2}            # cluster_stack → cluster_stack_version
MIN_TOKEN_TIMEOUT = 1.0
MIN_TOKEN_TIMEOUT_COEFFICIENT = 0.65
_CLUSTER_OPS = ["add", "remove", "enable", "disable", "destroy"]
_HOST_OPS = ["enable", "disable", "destroy"]


def _assert_params(cluster_stack, token_timeout, token_timeout_coefficient) -> None:
    if cluster_stack not in STACKS:
        raise ApiError("INVALID_CLUSTER_STACK", cluster_stack)
    if token_timeout < MIN_TOKEN_TIMEOUT:
        raise ApiError("INVALID_VALUE", "token_timeout", str(token_timeout))
    if token_timeout_coefficient < MIN_TOKEN_TIMEOUT_COEFFICIENT:
        raise ApiError("INVALID_VALUE", "token_timeout_coefficient",
                       str(token_timeout_coefficient))


def _assert_pif_ready(store, pif) -> None:
    """Plugged for good and addressed."""
    row = store.get("PIF", pif)
    if not row["disallow_unplug"]:
        raise ApiError("PIF_ALLOWS_UNPLUG", pif)
    if not row["currently_attached"]:
        raise ApiError("REQUIRED_PIF_IS_UNPLUGGED", pif)
    if not row["IP"]:
        raise ApiError("PIF_HAS_NO_NETWORK_CONFIGURATION", pif)


def _quorum(store, cluster) -> None:
    hosts = store.field("Cluster", cluster, "cluster_hosts")
    live = [h for h in hosts if store.get("Cluster_host", h)["enabled"]]
    expected = len(hosts)
    quorum = expected // 2 + 1 if expected else 0
    store.update("Cluster", cluster, {"live_hosts": len(live), "expected_hosts": expected,
                                      "quorum": quorum, "is_quorate": len(live) >= quorum > 0})


def _member(store, cluster, host, pif) -> str:
    return store.create("Cluster_host", {
        "cluster": cluster, "host": host, "PIF": pif, "enabled": True, "joined": True,
        "live": True, "last_update_live": now(), "allowed_operations": list(_HOST_OPS),
        "current_operations": {}, "other_config": {}})


@action("Cluster.create")
def cluster_create(ctx, PIF, cluster_stack, pool_auto_join, token_timeout,
                   token_timeout_coefficient):
    store = ctx.store
    _assert_params(cluster_stack, token_timeout, token_timeout_coefficient)
    if store.refs("Cluster"):
        raise ApiError("CLUSTER_ALREADY_EXISTS")
    _assert_pif_ready(store, PIF)
    cluster = store.create("Cluster", {
        "cluster_token": secrets.token_hex(16), "cluster_stack": cluster_stack,
        "cluster_stack_version": STACKS[cluster_stack], "pending_forget": [],
        "pool_auto_join": pool_auto_join, "token_timeout": token_timeout,
        "token_timeout_coefficient": token_timeout_coefficient, "cluster_config": {},
        "other_config": {}, "allowed_operations": list(_CLUSTER_OPS), "current_operations": {}})
    _member(store, cluster, ctx.app.host_ref, PIF)
    _quorum(store, cluster)
    return cluster


@action("Cluster.get_network")
def cluster_get_network(ctx, self):
    """The network of its members' PIFs."""
    store = ctx.store
    for ch in store.field("Cluster", self, "cluster_hosts"):
        pif = store.get("Cluster_host", ch)["PIF"]
        if store.exists("PIF", pif):
            return store.get("PIF", pif)["network"]
    return "OpaqueRef:NULL"


def _pif_on(store, network, host) -> str:
    for pif in store.field("network", network, "PIFs"):
        if store.get("PIF", pif)["host"] == host:
            return pif
    raise ApiError("INTERNAL_ERROR", f"No PIF found for host:{host} and network:{network}")


@action("Cluster.pool_create")
def cluster_pool_create(ctx, network, cluster_stack, token_timeout, token_timeout_coefficient):
    """Every host's PIF on the network made ready (plugged for good), then the cluster."""
    store = ctx.store
    _assert_params(cluster_stack, token_timeout, token_timeout_coefficient)
    pif = _pif_on(store, network, ctx.app.host_ref)
    if not store.get("PIF", pif)["IP"]:
        raise ApiError("PIF_HAS_NO_NETWORK_CONFIGURATION", pif)
    if store.refs("Cluster"):
        raise ApiError("CLUSTER_ALREADY_EXISTS")
    store.update("PIF", pif, {"currently_attached": True, "disallow_unplug": True})
    return cluster_create(ctx, pif, cluster_stack, True, token_timeout, token_timeout_coefficient)


def _assert_stack_unused(store, cluster, host=None) -> None:
    """No plugged SR of a type that needs the cluster (gfs2) may be left without it."""
    stack = store.get("Cluster", cluster)["cluster_stack"]
    for pbd in store.refs("PBD"):
        row = store.get("PBD", pbd)
        if host is not None and row["host"] != host:
            continue
        if row["currently_attached"] and store.exists("SR", row["SR"]) \
                and store.get("SR", row["SR"])["type"] == "gfs2":
            raise ApiError("CLUSTER_STACK_IN_USE", stack)


def _destroy_cluster(store, cluster) -> None:
    for ch in store.field("Cluster", cluster, "cluster_hosts"):
        store.destroy("Cluster_host", ch)
    store.destroy("Cluster", cluster)


@action("Cluster.destroy")
def cluster_destroy(ctx, self):
    store = ctx.store
    members = store.field("Cluster", self, "cluster_hosts")
    if len(members) > 1:
        raise ApiError("CLUSTER_DOES_NOT_HAVE_ONE_NODE", str(len(members)))
    _assert_stack_unused(store, self)
    _destroy_cluster(store, self)


@action("Cluster.pool_destroy")
def cluster_pool_destroy(ctx, self):
    store = ctx.store
    for ch in store.field("Cluster", self, "cluster_hosts"):
        if not store.get("Cluster_host", ch)["enabled"]:
            raise ApiError("CLUSTERING_DISABLED", ch)
    _assert_stack_unused(store, self)
    _destroy_cluster(store, self)


@action("Cluster.pool_force_destroy")
def cluster_pool_force_destroy(ctx, self):
    _destroy_cluster(ctx.store, self)


@action("Cluster.pool_resync")
def cluster_pool_resync(ctx, self):
    """Hosts of the pool that are not members join (pool_auto_join); members come back
    live and enabled."""
    store = ctx.store
    members = {store.get("Cluster_host", ch)["host"]: ch
               for ch in store.field("Cluster", self, "cluster_hosts")}
    network = cluster_get_network(ctx, self)
    for host in store.refs("host"):
        if host not in members and store.get("Cluster", self)["pool_auto_join"] \
                and store.exists("network", network):
            cluster_host_create(ctx, self, host, _pif_on(store, network, host))
    for ch in store.field("Cluster", self, "cluster_hosts"):
        if not store.get("Cluster_host", ch)["live"]:
            store.update("Cluster_host", ch, {"live": True, "last_update_live": now()})
    _quorum(store, self)


@action("Cluster_host.create")
def cluster_host_create(ctx, cluster, host, pif):
    store = ctx.store
    if store.get("PIF", pif)["host"] != host:
        raise ApiError("PIF_NOT_ATTACHED_TO_HOST", pif, host)
    if store.find("Cluster_host", host=host):
        raise ApiError("INTERNAL_ERROR",
                       "Cluster host cannot be created because it already exists")
    _assert_pif_ready(store, pif)
    ch = _member(store, cluster, host, pif)
    _quorum(store, cluster)
    return ch


@action("Cluster_host.destroy")
def cluster_host_destroy(ctx, self):
    store = ctx.store
    row = store.get("Cluster_host", self)
    if len(store.field("Cluster", row["cluster"], "cluster_hosts")) == 1:
        raise ApiError("CLUSTER_HOST_IS_LAST", self)
    _assert_stack_unused(store, row["cluster"], row["host"])
    store.destroy("Cluster_host", self)
    _quorum(store, row["cluster"])


@action("Cluster_host.force_destroy")
def cluster_host_force_destroy(ctx, self):
    store = ctx.store
    cluster = store.get("Cluster_host", self)["cluster"]
    store.destroy("Cluster_host", self)
    if store.exists("Cluster", cluster):
        _quorum(store, cluster)


@action("Cluster_host.enable")
def cluster_host_enable(ctx, self):
    store = ctx.store
    row = store.get("Cluster_host", self)
    _assert_pif_ready(store, row["PIF"])
    store.update("Cluster_host", self, {"enabled": True, "live": True,
                                        "last_update_live": now()})
    _quorum(store, row["cluster"])


@action("Cluster_host.disable")
def cluster_host_disable(ctx, self):
    store = ctx.store
    row = store.get("Cluster_host", self)
    _assert_stack_unused(store, row["cluster"], row["host"])
    store.update("Cluster_host", self, {"enabled": False, "live": False})
    _quorum(store, row["cluster"])
