"""Pool actions for a pool of one host (this server is always its master).

What a one-host pool can really do is done (settings, SSH, certificates and CRLs, HA on an
SR that can hold a statefile, the redo log, VLANs on every host, repositories, external
auth types it knows); what needs another host or an outside service fails with the error
xapi gives when that host or service is not there.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import re
import socket
import urllib.parse

from ..db.store import NULL, new_uuid, now
from ..errors import ApiError
from ..model.values import EPOCH
from . import network as _network
from . import storage as _storage
from .registry import ACTIONS, action


def the_pool(store) -> str:
    return store.refs("pool")[0]


def _hosts(store) -> list[str]:
    return store.refs("host")


def _wire_time(t: _dt.datetime) -> str:
    return t.strftime("%Y%m%dT%H:%M:%SZ")


async def _host_call(ctx, name: str, *args):
    """Run the host action ``name`` (host.py) as xapi's pool calls run Host.* on each member."""
    result = ACTIONS[name](ctx, *args)
    return await result if asyncio.iscoroutine(result) else result


def _assert_ha_disabled(store) -> None:
    if store.get("pool", the_pool(store))["ha_enabled"]:
        raise ApiError("HA_IS_ENABLED")


# ---------------------------------------------------------------------------------------------
# settings applied to every host: a host that fails is named in the pool's "partially failed"
# error, as xapi's pool calls report them
# ---------------------------------------------------------------------------------------------

async def _on_every_host(ctx, apply, error: str) -> None:
    failed = []
    for host in _hosts(ctx.store):
        try:
            result = apply(host)
            if asyncio.iscoroutine(result):
                await result
        except ApiError:
            failed.append(host)
    if failed:
        raise ApiError(error, *failed)


@action("pool.enable_ssh")
async def enable_ssh(ctx, self):
    await _on_every_host(ctx, lambda h: _host_call(ctx, "host.enable_ssh", h),
                         "ENABLE_SSH_PARTIALLY_FAILED")


@action("pool.disable_ssh")
async def disable_ssh(ctx, self):
    await _on_every_host(ctx, lambda h: _host_call(ctx, "host.disable_ssh", h),
                         "DISABLE_SSH_PARTIALLY_FAILED")


MAX_SSH_TIMEOUT = 2 * 24 * 60 * 60


@action("pool.set_ssh_enabled_timeout")
async def set_ssh_enabled_timeout(ctx, self, value):
    store = ctx.store

    def apply(host):
        if not 0 <= value <= MAX_SSH_TIMEOUT:
            raise ApiError("INVALID_VALUE", "timeout", value)
        changes = {"ssh_enabled_timeout": value}
        if store.get("host", host)["ssh_enabled"]:
            changes["ssh_expiry"] = now() + _dt.timedelta(seconds=value) if value else EPOCH
        store.update("host", host, changes)

    await _on_every_host(ctx, apply, "SET_SSH_TIMEOUT_PARTIALLY_FAILED")


@action("pool.set_console_idle_timeout")
async def set_console_idle_timeout(ctx, self, value):
    store = ctx.store

    def apply(host):
        if value < 0:
            raise ApiError("INVALID_VALUE", "console_timeout", value)
        store.update("host", host, {"console_idle_timeout": value})

    await _on_every_host(ctx, apply, "SET_CONSOLE_TIMEOUT_PARTIALLY_FAILED")


@action("pool.set_ssh_auto_mode")
async def set_ssh_auto_mode(ctx, self, value):
    await _on_every_host(ctx, lambda h: ctx.store.update("host", h, {"ssh_auto_mode": value}),
                         "SET_SSH_AUTO_MODE_PARTIALLY_FAILED")


@action("pool.set_https_only")
def set_https_only(ctx, self, value):
    for host in _hosts(ctx.store):
        ctx.store.update("host", host, {"https_only": value})


@action("pool.disable_ssl_legacy")
def disable_ssl_legacy(ctx, self):
    for host in _hosts(ctx.store):
        ctx.store.update("host", host, {"ssl_legacy": False})


@action("pool.enable_tls_verification")
def enable_tls_verification(ctx):
    store = ctx.store
    for host in _hosts(store):
        store.update("host", host, {"tls_verification_enabled": True})
    store.update("pool", the_pool(store), {"tls_verification_enabled": True})


@action("pool.enable_client_certificate_auth")
def enable_client_certificate_auth(ctx, self, name):
    ctx.store.update("pool", self, {"client_certificate_auth_enabled": True,
                                    "client_certificate_auth_name": name})


@action("pool.disable_client_certificate_auth")
def disable_client_certificate_auth(ctx, self):
    ctx.store.update("pool", self, {"client_certificate_auth_enabled": False,
                                    "client_certificate_auth_name": ""})


@action("pool.reset_telemetry_uuid")
def reset_telemetry_uuid(ctx, self):
    """A new secret holding a new telemetry uuid; the old secret goes."""
    store = ctx.store
    old = store.get("pool", self)["telemetry_uuid"]
    secret = store.create("secret", {"value": new_uuid(), "other_config": {}})
    store.update("pool", self, {"telemetry_uuid": secret})
    if old != NULL and store.exists("secret", old):
        store.destroy("secret", old)


@action("pool.configure_update_sync")
def configure_update_sync(ctx, self, update_sync_frequency, update_sync_day):
    if update_sync_frequency == "weekly" and not 0 <= update_sync_day <= 6:
        raise ApiError("INVALID_UPDATE_SYNC_DAY", update_sync_day)
    day = update_sync_day if update_sync_frequency == "weekly" else 0
    ctx.store.update("pool", self, {"update_sync_frequency": update_sync_frequency,
                                    "update_sync_day": day})


@action("pool.rotate_secret")
def rotate_secret(ctx):
    # the pool secret is what members use among themselves: one host has nobody to tell
    _assert_ha_disabled(ctx.store)


@action("pool.sync_database")
def sync_database(ctx):
    """Every member already holds the database: the master is the only member."""


@action("pool.certificate_sync")
def certificate_sync(ctx):
    """Every member already has the pool's CA certificates and CRLs."""


@action("pool.detect_nonhomogeneous_external_auth")
def detect_nonhomogeneous_external_auth(ctx, pool):
    """Compares each member's external auth with the master's: there is no other member."""


@action("pool.ha_prevent_restarts_for")
def ha_prevent_restarts_for(ctx, seconds):
    """Accepted with or without HA, as xapi does (HA may be about to be enabled)."""


@action("pool.test_archive_target")
def test_archive_target(ctx, self, config):
    raise ApiError("MESSAGE_REMOVED")


# ---------------------------------------------------------------------------------------------
# licensing: XCP-ng has a single edition
# ---------------------------------------------------------------------------------------------

@action("pool.get_license_state")
def get_license_state(ctx, self):
    store = ctx.store
    rows = [store.get("host", h) for h in _hosts(store)]
    expiries = sorted(r["license_params"]["expiry"] for r in rows if "expiry" in r["license_params"])
    return {"edition": rows[0]["edition"] if rows else "", "expiry": expiries[0] if expiries else "never"}


@action("pool.apply_edition")
async def apply_edition(ctx, self, edition):
    for host in _hosts(ctx.store):
        await _host_call(ctx, "host.apply_edition", host, edition, False)


@action("pool.has_extension")
async def has_extension(ctx, self, name):
    for host in _hosts(ctx.store):
        if not await _host_call(ctx, "host.has_extension", host, name):
            return False
    return True


@action("pool.get_guest_secureboot_readiness")
def get_guest_secureboot_readiness(ctx, self):
    # guests can boot securely once the pool holds UEFI certificates (PK, KEK, db, dbx)
    row = ctx.store.get("pool", self)
    return "ready" if row["uefi_certificates"] or row["custom_uefi_certificates"] else "not_ready"


# ---------------------------------------------------------------------------------------------
# certificates: CA certificates (by name), CRLs (by name), trusted certificates
# ---------------------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+\Z")


def _valid_name(name: str) -> bool:
    return bool(_SAFE_NAME.match(name)) and not name.startswith(".")


def _load_cert(text: str):
    from cryptography import x509  # here, not at import: the server's start does not wait on it

    try:
        return x509.load_pem_x509_certificate(text.encode())
    except ValueError:
        return None


def _fingerprints(cert) -> dict:
    from cryptography.hazmat.primitives import hashes

    def colon(h):
        return ":".join(f"{b:02X}" for b in cert.fingerprint(h))

    sha256 = colon(hashes.SHA256())
    return {"fingerprint": sha256, "fingerprint_sha256": sha256,
            "fingerprint_sha1": colon(hashes.SHA1())}  # noqa: S303 (a name, not a signature)


def _validity(cert) -> dict:
    return {"not_before": cert.not_valid_before_utc.replace(tzinfo=None, microsecond=0),
            "not_after": cert.not_valid_after_utc.replace(tzinfo=None, microsecond=0)}


def _named_ca(store, name) -> str | None:
    found = store.find("Certificate", type="ca", name=name)
    return found[0] if found else None


def _install_ca(ctx, name, cert):
    store = ctx.store
    if not _valid_name(name):
        raise ApiError("CERTIFICATE_NAME_INVALID", name)
    if _named_ca(store, name):
        raise ApiError("CERTIFICATE_ALREADY_EXISTS", name)
    parsed = _load_cert(cert)
    if parsed is None:
        raise ApiError("CERTIFICATE_CORRUPT", name)
    store.create("Certificate", {"name": name, "type": "ca", "host": NULL, "purpose": [],
                                 **_validity(parsed), **_fingerprints(parsed)})


def _uninstall_ca(ctx, name, force=False):
    ref = _named_ca(ctx.store, name)
    if ref is None:
        if force:
            return
        raise ApiError("CERTIFICATE_DOES_NOT_EXIST", name)
    ctx.store.destroy("Certificate", ref)


@action("pool.certificate_install", "pool.install_ca_certificate")
def certificate_install(ctx, name, cert):
    _install_ca(ctx, name, cert)


@action("pool.certificate_uninstall")
def certificate_uninstall(ctx, name):
    _uninstall_ca(ctx, name)


@action("pool.uninstall_ca_certificate")
def uninstall_ca_certificate(ctx, name, force):
    _uninstall_ca(ctx, name, force)


@action("pool.certificate_list")
def certificate_list(ctx):
    store = ctx.store
    return sorted(store.get("Certificate", r)["name"] for r in store.find("Certificate", type="ca")
                  if store.get("Certificate", r)["name"])


@action("pool.install_trusted_certificate")
def install_trusted_certificate(ctx, self, ca, cert, purpose):
    store = ctx.store
    parsed = _load_cert(cert)
    if parsed is None:
        raise ApiError("TRUSTED_CERTIFICATE_INVALID")
    if not ca and not purpose:
        raise ApiError("CERTIFICATE_LACKS_PURPOSE")
    validity, t = _validity(parsed), now()
    if t < validity["not_before"]:
        raise ApiError("TRUSTED_CERTIFICATE_NOT_VALID_YET", _wire_time(t),
                       _wire_time(validity["not_before"]))
    if t > validity["not_after"]:
        raise ApiError("TRUSTED_CERTIFICATE_EXPIRED", _wire_time(t), _wire_time(validity["not_after"]))
    prints = _fingerprints(parsed)
    kind = "ca" if ca else "pinned"
    for r in store.find("Certificate", type=kind, fingerprint_sha256=prints["fingerprint_sha256"]):
        if not store.get("Certificate", r)["name"]:
            raise ApiError("TRUSTED_CERTIFICATE_ALREADY_EXISTS", prints["fingerprint_sha256"])
    store.create("Certificate", {"name": "", "type": kind, "host": NULL,
                                 "purpose": list(dict.fromkeys(purpose)), **validity, **prints})


@action("pool.uninstall_trusted_certificate")
def uninstall_trusted_certificate(ctx, self, certificate):
    row = ctx.store.get("Certificate", certificate)
    if row["type"] not in ("ca", "pinned"):
        raise ApiError("NOT_TRUSTED_CERTIFICATE", certificate)
    ctx.store.destroy("Certificate", certificate)


class _Crls:
    """CRLs are files by name, as in xapi (/etc/stunnel/crls): under the state dir here."""

    def __init__(self, app):
        self.dir = app.state_dir / "crls" if app.state_dir else None
        self.mem = app.__dict__.setdefault("crls", {})

    def names(self) -> list[str]:
        if self.dir is None:
            return sorted(self.mem)
        return sorted(p.name for p in self.dir.iterdir()) if self.dir.exists() else []

    def add(self, name: str, text: str) -> None:
        if self.dir is None:
            self.mem[name] = text
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / name).write_text(text)

    def remove(self, name: str) -> None:
        if self.dir is None:
            self.mem.pop(name, None)
        else:
            (self.dir / name).unlink(missing_ok=True)


@action("pool.crl_install")
def crl_install(ctx, name, cert):
    crls = _Crls(ctx.app)
    if not _valid_name(name):
        raise ApiError("CRL_NAME_INVALID", name)
    if name in crls.names():
        raise ApiError("CRL_ALREADY_EXISTS", name)
    from cryptography import x509

    try:
        x509.load_pem_x509_crl(cert.encode())
    except ValueError:
        raise ApiError("CRL_CORRUPT", name) from None
    crls.add(name, cert)


@action("pool.crl_uninstall")
def crl_uninstall(ctx, name):
    crls = _Crls(ctx.app)
    if name not in crls.names():
        raise ApiError("CRL_DOES_NOT_EXIST", name)
    crls.remove(name)


@action("pool.crl_list")
def crl_list(ctx):
    return _Crls(ctx.app).names()


# ---------------------------------------------------------------------------------------------
# HA and the redo log
# ---------------------------------------------------------------------------------------------

def _statefile_sr_error(store, sr) -> tuple | None:
    """Why ``sr`` cannot hold the HA statefile (xapi's checks), or None."""
    attached_on = {store.get("PBD", p)["host"] for p in store.field("SR", sr, "PBDs")
                   if store.get("PBD", p)["currently_attached"]}
    if not set(_hosts(store)) <= attached_on:
        return ("SR_HAS_NO_PBDS", sr)
    if "vdi_create" not in _storage.sr_caps(store, sr):  # the driver cannot generate a config
        return ("SR_OPERATION_NOT_SUPPORTED", sr)
    return None


async def _find_or_create_vdi(ctx, sr, vdi_type, size, name) -> str:
    store = ctx.store
    for v in store.field("SR", sr, "VDIs"):
        row = store.get("VDI", v)
        if row["type"] == vdi_type and row["virtual_size"] >= size:
            return v
    return await _storage.create_vdi(ctx, sr, size, name, type=vdi_type, sharable=True)


@action("pool.enable_ha")
async def enable_ha(ctx, heartbeat_srs, configuration):
    store = ctx.store
    pool = the_pool(store)
    row = store.get("pool", pool)
    if row["ha_enabled"]:
        raise ApiError("HA_IS_ENABLED")
    if row["redo_log_enabled"]:
        raise ApiError("REDO_LOG_IS_ENABLED")
    unplugged = [p for p in store.refs("PIF") if store.get("PIF", p)["disallow_unplug"]
                 and not store.get("PIF", p)["currently_attached"]]
    if unplugged:
        raise ApiError("REQUIRED_PIF_IS_UNPLUGGED", *unplugged)
    for host in _hosts(store):
        metrics = store.get("host", host)["metrics"]
        if not (store.exists("host_metrics", metrics) and store.get("host_metrics", metrics)["live"]):
            raise ApiError("HOST_OFFLINE", host)
    if heartbeat_srs:
        error = _statefile_sr_error(store, heartbeat_srs[0])
        if error:
            raise ApiError(*error)
        sr = heartbeat_srs[0]  # xHA uses one statefile
    else:
        possible = [s for s in store.refs("SR") if _statefile_sr_error(store, s) is None]
        if not possible:
            raise ApiError("CANNOT_CREATE_STATE_FILE")
        sr = possible[0]
    statefile = await _find_or_create_vdi(ctx, sr, "ha_statefile", 4 << 20, "Statefile for HA")
    await _find_or_create_vdi(ctx, sr, "metadata", 256 << 20, "Metadata for HA")
    store.update("pool", pool, {
        "ha_enabled": True, "ha_statefiles": [statefile], "ha_configuration": dict(configuration),
        "ha_cluster_stack": "xhad", "ha_plan_exists_for": 0, "ha_overcommitted": False})


@action("pool.disable_ha")
def disable_ha(ctx):
    store = ctx.store
    pool = the_pool(store)
    if not store.get("pool", pool)["ha_enabled"]:
        raise ApiError("HA_NOT_ENABLED")
    # the statefile and metadata VDIs stay for the next enable, as in xapi
    store.update("pool", pool, {"ha_enabled": False, "ha_statefiles": [],
                                "ha_plan_exists_for": 0, "ha_overcommitted": False})


def _protected_vms(store) -> list[str]:
    return [v for v, row in store.tables["VM"].items()
            if row["ha_restart_priority"] == "restart" and not row["is_a_template"]
            and not row["is_control_domain"] and not row["is_a_snapshot"]]


def _agility_error(store, vm) -> str | None:
    """The HA constraint ``vm`` breaks (its disks or networks are not on every host)."""
    hosts = set(_hosts(store))
    for vbd in store.field("VM", vm, "VBDs"):
        vdi = store.get("VBD", vbd)["VDI"]
        if vdi != NULL and store.exists("VDI", vdi):
            sr = store.get("VDI", vdi)["SR"]
            if store.exists("SR", sr) and not store.get("SR", sr)["shared"]:
                return "HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED"
    for vif in store.field("VM", vm, "VIFs"):
        net = store.get("VIF", vif)["network"]
        on = {store.get("PIF", p)["host"] for p in store.field("network", net, "PIFs")} \
            if store.exists("network", net) else set()
        if not hosts <= on:
            return "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED"
    return None


def _max_failures(store) -> int:
    """Host failures the pool can survive: it needs a live host left to restart VMs on."""
    return len(_hosts(store)) - 1


@action("pool.ha_compute_max_host_failures_to_tolerate")
def ha_compute_max_host_failures_to_tolerate(ctx):
    return _max_failures(ctx.store)


@action("pool.ha_compute_hypothetical_max_host_failures_to_tolerate")
def ha_compute_hypothetical_max_host_failures_to_tolerate(ctx, configuration):
    for vm, priority in configuration.items():
        if priority not in ("restart", "best-effort", ""):
            raise ApiError("INVALID_VALUE", "ha_restart_priority", priority)
        if not ctx.store.exists("VM", vm):
            raise ApiError("HANDLE_INVALID", "VM", vm)
    return _max_failures(ctx.store)


@action("pool.ha_failover_plan_exists")
def ha_failover_plan_exists(ctx, n):
    store = ctx.store
    protected = _protected_vms(store)
    if not protected:
        return True
    if any(_agility_error(store, vm) for vm in protected):
        return False  # a plan that leaves non-agile VMs out does not count
    return n <= _max_failures(store)


@action("pool.ha_compute_vm_failover_plan")
def ha_compute_vm_failover_plan(ctx, failed_hosts, failed_vms):
    """Where each failed VM would restart: a surviving live host with the memory for it, else
    why not (the VM's agility error, or not enough free memory)."""
    store = ctx.store
    free = {}
    for host in _hosts(store):
        metrics = store.get("host", host)["metrics"]
        if host not in failed_hosts and store.exists("host_metrics", metrics) \
                and store.get("host_metrics", metrics)["live"]:
            used = sum(store.get("VM", v)["memory_static_max"]
                       for v in store.find("VM", resident_on=host)
                       if store.get("VM", v)["power_state"] in ("Running", "Paused"))
            free[host] = store.get("host_metrics", metrics)["memory_total"] - used
    plan = {}
    for vm in failed_vms:
        if not store.exists("VM", vm):
            raise ApiError("HANDLE_INVALID", "VM", vm)
        need = store.get("VM", vm)["memory_static_max"]
        target = next((h for h, f in free.items() if f >= need), None)
        if target is not None:
            free[target] -= need
            plan[vm] = {"host": target}
        else:
            plan[vm] = {"error_code": _agility_error(store, vm) or "HOST_NOT_ENOUGH_FREE_MEMORY"}
    return plan


@action("pool.enable_redo_log")
async def enable_redo_log(ctx, sr):
    store = ctx.store
    try:
        vdi = await _find_or_create_vdi(ctx, sr, "redo_log", 4 << 20, "Metadata redo-log")
    except ApiError:
        raise ApiError("CANNOT_ENABLE_REDO_LOG",
                       "failed to create a VDI for the redo log on the SR with the given UUID.") \
            from None
    store.update("pool", the_pool(store), {"redo_log_vdi": vdi, "redo_log_enabled": True})


@action("pool.disable_redo_log")
def disable_redo_log(ctx):
    store = ctx.store
    store.update("pool", the_pool(store), {"redo_log_enabled": False})


@action("pool.enable_local_storage_caching")
async def enable_local_storage_caching(ctx, self):
    """Host.enable_local_storage_caching on each host with a local SR of its own; the hosts
    where none took it are named in the error."""
    store = ctx.store
    failed = []
    for host in _hosts(store):
        done = False
        for sr, row in store.tables["SR"].items():
            pbds = store.field("SR", sr, "PBDs")
            if row["shared"] or len(pbds) != 1 or store.get("PBD", pbds[0])["host"] != host:
                continue
            try:
                await _host_call(ctx, "host.enable_local_storage_caching", host, sr)
                done = True
            except ApiError:
                pass
        if not done:
            failed.append(host)
    if failed:
        raise ApiError("HOSTS_FAILED_TO_ENABLE_CACHING", *failed)


@action("pool.disable_local_storage_caching")
async def disable_local_storage_caching(ctx, self):
    await _on_every_host(ctx, lambda h: _host_call(ctx, "host.disable_local_storage_caching", h),
                         "HOSTS_FAILED_TO_DISABLE_CACHING")


# ---------------------------------------------------------------------------------------------
# networking across the pool: the host-level actions of network.py, on every host
# ---------------------------------------------------------------------------------------------

def _plug_all(ctx, pifs) -> list[str]:
    for pif in pifs:  # best effort, as xapi: a PIF that does not plug stays unplugged
        try:
            _network.pif_plug(ctx, pif)
        except ApiError:
            pass
    return pifs


@action("pool.create_VLAN")
def create_vlan(ctx, device, network, VLAN):
    return _plug_all(ctx, [_network.pif_create_vlan(ctx, device, network, host, VLAN)
                           for host in _hosts(ctx.store)])


@action("pool.create_VLAN_from_PIF")
def create_vlan_from_pif(ctx, pif, network, VLAN):
    """A VLAN on every live host's PIF of the network ``pif`` is on."""
    store = ctx.store
    live = []
    for p in store.field("network", store.get("PIF", pif)["network"], "PIFs"):
        metrics = store.get("host", store.get("PIF", p)["host"])["metrics"]
        if store.exists("host_metrics", metrics) and store.get("host_metrics", metrics)["live"]:
            live.append(p)
    vlans = [_network.vlan_create(ctx, p, VLAN, network) for p in live]
    return _plug_all(ctx, [store.get("VLAN", v)["untagged_PIF"] for v in vlans])


@action("pool.management_reconfigure")
async def management_reconfigure(ctx, network):
    store = ctx.store
    _assert_ha_disabled(store)
    pifs = store.field("network", network, "PIFs")
    on_host = {store.get("PIF", p)["host"]: p for p in pifs}
    for host in _hosts(store):
        if host not in on_host:
            raise ApiError("PIF_NOT_PRESENT", host, network)
    address_type = store.get("PIF", pifs[0])["primary_address_type"]
    for p in pifs:
        row = store.get("PIF", p)
        if row["primary_address_type"] != address_type:
            raise ApiError("PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE", p)
        if row["bond_slave_of"] != NULL:
            raise ApiError("CANNOT_PLUG_BOND_SLAVE", p)
        if address_type == "IPv4" and row["ip_configuration_mode"] == "None":
            raise ApiError("PIF_HAS_NO_NETWORK_CONFIGURATION", p)
        if address_type == "IPv6" and row["ipv6_configuration_mode"] == "None":
            raise ApiError("PIF_HAS_NO_V6_NETWORK_CONFIGURATION", p)
    for host, pif in on_host.items():
        await _host_call(ctx, "host.management_reconfigure", pif)


# ---------------------------------------------------------------------------------------------
# membership: this host is the master and the only member
# ---------------------------------------------------------------------------------------------

def _is_this_host(store, address: str) -> bool:
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
    for host in _hosts(store):
        row = store.get("host", host)
        names |= {row["address"], row["hostname"]}
    names.discard("")
    return address.strip().lower() in {n.lower() for n in names}


async def _reachable(address: str, port: int = 443, timeout: float = 5.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


async def _join(ctx, master_address, master_username, master_password):
    store = ctx.store
    _assert_ha_disabled(store)
    if _is_this_host(store, master_address):
        # logging in to the "new master" works (or fails as any login), then xapi finds
        # that the master it reached is itself
        session = await ctx.app.sessions.login(master_username, master_password, "pool.join")
        ctx.app.sessions.logout(session)
        raise ApiError("OPERATION_NOT_ALLOWED", "Host cannot become slave of itself")
    if not await _reachable(master_address):
        raise ApiError("JOINING_HOST_CONNECTION_FAILED")
    # another xapi answers there: becoming its member is beyond a simulated host
    raise ApiError("NOT_IMPLEMENTED", "pool.join")


@action("pool.join", "pool.join_force")
async def join(ctx, master_address, master_username, master_password):
    await _join(ctx, master_address, master_username, master_password)


@action("pool.eject")
def eject(ctx, host):
    store = ctx.store
    _assert_ha_disabled(store)
    if host == store.get("pool", the_pool(store))["master"]:
        # xapi answers with its internal exception here: the master cannot leave its pool
        raise ApiError("INTERNAL_ERROR", "Xapi_pool.Cannot_eject_master")
    raise ApiError("NOT_IMPLEMENTED", "pool.eject")  # no other host can be a member here


@action("pool.designate_new_master")
def designate_new_master(ctx, host):
    """Naming the current master again is a no-op in xapi; there is no other host to name."""


@action("pool.emergency_transition_to_master")
def emergency_transition_to_master(ctx):
    """Already the master: xapi restarts into the role it has; nothing changes."""
    _assert_ha_disabled(ctx.store)


@action("pool.emergency_reset_master")
async def emergency_reset_master(ctx, master_address):
    _assert_ha_disabled(ctx.store)
    try:
        await asyncio.get_running_loop().getaddrinfo(master_address, None)
    except OSError:
        raise ApiError("INTERNAL_ERROR", f"Couldn't resolve hostname: {master_address}") from None
    # xapi would now restart as a member of that master's pool: beyond a simulated host
    raise ApiError("NOT_IMPLEMENTED", "pool.emergency_reset_master")


@action("pool.recover_slaves")
def recover_slaves(ctx):
    return []  # no member lost its master


# ---------------------------------------------------------------------------------------------
# external authentication: no directory service is reachable from here
# ---------------------------------------------------------------------------------------------

@action("pool.enable_external_auth")
async def enable_external_auth(ctx, pool, config, service_name, auth_type):
    """Host.enable_external_auth on each host; the first failure is the pool's, as xapi
    reports it (AUTH_ENABLE_FAILED_* become POOL_AUTH_ENABLE_FAILED_* naming the host)."""
    store = ctx.store
    hosts = _hosts(store)
    for host in hosts:
        if store.get("host", host)["external_auth_type"]:
            raise ApiError("POOL_AUTH_ALREADY_ENABLED", host)
    done = []
    for host in hosts:
        try:
            await _host_call(ctx, "host.enable_external_auth", host, config, service_name, auth_type)
        except ApiError as e:
            for h in done:  # best-effort rollback
                try:
                    await _host_call(ctx, "host.disable_external_auth", h, config, False)
                except ApiError:
                    pass
            raise _pool_auth_error(e, host, "ENABLE") from None
        done.append(host)


def _pool_auth_error(e: ApiError, host: str, verb: str) -> ApiError:
    if e.code == "AUTH_UNKNOWN_TYPE":
        return e
    message = e.params[0] if len(e.params) == 1 else str(e)
    if e.code.startswith(f"AUTH_{verb}_FAILED"):
        return ApiError("POOL_" + e.code, host, message)
    return ApiError(f"POOL_AUTH_{verb}_FAILED", host, str(e))


@action("pool.disable_external_auth")
async def disable_external_auth(ctx, pool, config):
    """Host.disable_external_auth on every host (each is tried), then the first failure."""
    failed = []
    for host in _hosts(ctx.store):
        try:
            await _host_call(ctx, "host.disable_external_auth", host, config, False)
        except ApiError as e:
            failed.append(_pool_auth_error(e, host, "DISABLE"))
    if failed:
        raise failed[0]


@action("pool.external_auth_set_ldaps")
async def external_auth_set_ldaps(ctx, pool, ldaps, force):
    for host in _hosts(ctx.store):
        await _host_call(ctx, "host.external_auth_set_ldaps", host, ldaps, force)


# ---------------------------------------------------------------------------------------------
# workload balancing: never configured here
# ---------------------------------------------------------------------------------------------

def _assert_wlb_initialized(store) -> dict:
    row = store.get("pool", the_pool(store))
    if not row["wlb_url"]:
        raise ApiError("WLB_NOT_INITIALIZED")
    return row


@action("pool.initialize_wlb")
async def initialize_wlb(ctx, wlb_url, wlb_username, wlb_password, xenserver_username,
                         xenserver_password):
    parts = urllib.parse.urlsplit("//" + wlb_url if "//" not in wlb_url else wlb_url)
    try:
        host, port = parts.hostname, parts.port or 8012
    except ValueError:
        host = None
    if not host:
        raise ApiError("WLB_URL_INVALID", wlb_url)
    try:
        await asyncio.get_running_loop().getaddrinfo(host, port)
    except OSError:
        raise ApiError("WLB_UNKNOWN_HOST") from None
    if not await _reachable(host, port):
        raise ApiError("WLB_CONNECTION_REFUSED")
    raise ApiError("NOT_IMPLEMENTED", "pool.initialize_wlb")  # speaking WLB's protocol


@action("pool.deconfigure_wlb")
def deconfigure_wlb(ctx):
    _assert_wlb_initialized(ctx.store)


@action("pool.send_wlb_configuration")
def send_wlb_configuration(ctx, config):
    _assert_wlb_initialized(ctx.store)


@action("pool.retrieve_wlb_configuration")
def retrieve_wlb_configuration(ctx):
    _assert_wlb_initialized(ctx.store)


@action("pool.retrieve_wlb_recommendations")
def retrieve_wlb_recommendations(ctx):
    row = _assert_wlb_initialized(ctx.store)
    if not row["wlb_enabled"]:
        raise ApiError("WLB_DISABLED")


# ---------------------------------------------------------------------------------------------
# update repositories
# ---------------------------------------------------------------------------------------------

@action("pool.add_repository")
def add_repository(ctx, self, value):
    store = ctx.store
    current = store.get("pool", self)["repositories"]
    if value in current:
        return
    repos = [*current, value]
    if sum(1 for r in repos if store.get("Repository", r)["update"]) > 1:
        raise ApiError("MULTIPLE_UPDATE_REPOSITORIES_ENABLED")
    store.update("pool", self, {"repositories": repos})


@action("pool.remove_repository")
def remove_repository(ctx, self, value):
    store = ctx.store
    current = store.get("pool", self)["repositories"]
    if value in current:
        rest = [r for r in current if r != value]
        changes = {"repositories": rest}
        if not rest:
            changes["last_update_sync"] = EPOCH
        store.update("pool", self, changes)


@action("pool.sync_updates")
def sync_updates(ctx, self, force, token, token_id, username, password):
    if not ctx.store.get("pool", self)["repositories"]:
        raise ApiError("NO_REPOSITORIES_CONFIGURED")
    raise ApiError("NOT_IMPLEMENTED", "pool.sync_updates")  # fetching a real yum repository


@action("pool.check_update_readiness")
def check_update_readiness(ctx, self, requires_reboot):
    """What would stop an update, as [error code, params…] lists: an HA pool or a disabled host."""
    store = ctx.store
    problems = []
    if store.get("pool", self)["ha_enabled"]:
        problems.append(["HA_IS_ENABLED"])
    for host in _hosts(store):
        if not store.get("host", host)["enabled"]:
            problems.append(["HOST_DISABLED", host])
    return problems


@action("pool.configure_repository_proxy")
def configure_repository_proxy(ctx, self, url, username, password):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError("INVALID_REPOSITORY_PROXY_URL", url)
    if bool(username) != bool(password):
        raise ApiError("INVALID_REPOSITORY_PROXY_CREDENTIAL")
    store = ctx.store
    _drop_proxy_secret(store, self)
    secret = store.create("secret", {"value": password, "other_config": {}}) if password else NULL
    store.update("pool", self, {"repository_proxy_url": url, "repository_proxy_username": username,
                                "repository_proxy_password": secret})


def _drop_proxy_secret(store, pool) -> None:
    old = store.get("pool", pool)["repository_proxy_password"]
    if old != NULL and store.exists("secret", old):
        store.destroy("secret", old)


@action("pool.disable_repository_proxy")
def disable_repository_proxy(ctx, self):
    store = ctx.store
    _drop_proxy_secret(store, self)
    store.update("pool", self, {"repository_proxy_url": "", "repository_proxy_username": "",
                                "repository_proxy_password": NULL})
