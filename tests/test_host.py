"""Issue 3, host messages a single-host pool answers, through XenAPI.py against a real server.

Tests that change the host's state (disable, reboot, management interface, hostname…) run on
a server of their own (`fresh_server`) so the shared one stays as other tests expect it."""
import base64
import datetime as dt
import gzip
import socket
import ssl
import time
import xml.etree.ElementTree as ET
import zoneinfo

import pytest
import XenAPI

from tests.helpers import failure, put_receiver, the_host
from tests.test_vm_lifecycle import GiB, new_vm, vm_args, wait_for

MiB = 2**20


def as_datetime(value) -> dt.datetime:
    text = getattr(value, "value", value)
    return dt.datetime.strptime(text.rstrip("Z").replace("-", ""), "%Y%m%dT%H:%M:%S")


def running_vm(x, name, memory=GiB, dynamic_min=None):
    args = vm_args(name, memory)
    if dynamic_min is not None:
        args["memory_dynamic_min"] = str(dynamic_min)
    vm = x.VM.create(args)
    x.VM.start(vm, False, False)
    return vm


@pytest.fixture
def fresh(fresh_server):
    srv = fresh_server()
    session = srv.session()
    yield srv, session.xenapi


# ---- clock ------------------------------------------------------------------------------------

def test_servertime_is_utc_and_localtime_local(xapi):
    host = the_host(xapi)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    t = as_datetime(xapi.host.get_servertime(host))
    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert before - dt.timedelta(seconds=1) <= t <= after
    local = as_datetime(xapi.host.get_server_localtime(host))
    tz = xapi.host.get_timezone(host)
    expected = (dt.datetime.now(zoneinfo.ZoneInfo(tz)) if tz else dt.datetime.now()).replace(
        tzinfo=None, microsecond=0)
    assert abs((local - expected).total_seconds()) <= 2
    zones = xapi.host.list_timezones(host)
    assert "Europe/Paris" in zones and "America/New_York" in zones
    assert zones == sorted(zones)


def test_servertime_follows_timezone_and_set_servertime(fresh):
    srv, x = fresh
    host = the_host(x)
    x.host.set_timezone(host, "Asia/Tokyo")  # UTC+9, no daylight saving
    utc = as_datetime(x.host.get_servertime(host))
    local = as_datetime(x.host.get_server_localtime(host))
    assert abs((local - utc).total_seconds() - 9 * 3600) <= 2
    # the clock is NTP's while NTP runs
    if x.host.get_ntp_mode(host) != "Disabled":
        wanted = utc + dt.timedelta(days=1)
        assert failure(x.host.set_servertime, host, wanted.strftime("%Y%m%dT%H:%M:%SZ")) == [
            "NOT_ALLOWED_WHEN_NTP_IS_ENABLED", host]
        assert abs((as_datetime(x.host.get_servertime(host)) - utc).total_seconds()) <= 2
    x.host.set_ntp_mode(host, "Disabled")
    assert x.host.get_ntp_synchronized(host) is False
    assert x.host.get_ntp_servers_status(host) == {}
    wanted = dt.datetime(2030, 1, 2, 3, 4, 5)
    x.host.set_servertime(host, wanted.strftime("%Y%m%dT%H:%M:%SZ"))
    assert abs((as_datetime(x.host.get_servertime(host)) - wanted).total_seconds()) <= 2
    x.host.set_ntp_mode(host, "Custom")
    x.host.set_ntp_custom_servers(host, ["ntp1.example.org", "ntp2.example.org"])
    assert x.host.get_ntp_synchronized(host) is True
    status = x.host.get_ntp_servers_status(host)
    assert set(status) == {"ntp1.example.org", "ntp2.example.org"}
    assert "Synchronized" in status.values()


# ---- logs, diagnostics ------------------------------------------------------------------------

def test_log_calls_xapi_does_not_implement(xapi):
    host = the_host(xapi)
    assert failure(xapi.host.get_log, host) == ["NOT_IMPLEMENTED", "get_log"]
    assert failure(xapi.host.dmesg_clear, host) == ["NOT_IMPLEMENTED", "dmesg_clear"]
    assert failure(xapi.host.list_methods) == ["NOT_IMPLEMENTED", "list_method"]


def test_dmesg_shows_xen_console_and_debug_keys(xapi):
    host = the_host(xapi)
    text = xapi.host.dmesg(host)
    lines = text.splitlines()
    assert lines[0].startswith("(XEN) Xen version ")
    assert all(line.startswith("(XEN)") for line in lines)
    cpu = xapi.host.get_cpu_info(host)
    assert any(cpu["vendor"] in line for line in lines)
    xapi.host.send_debug_keys(host, "q")
    after = xapi.host.dmesg(host)
    assert after.startswith(text) and "'q' pressed -> dumping domain info" in after


def test_system_status_capabilities_is_xml(xapi):
    root = ET.fromstring(xapi.host.get_system_status_capabilities(the_host(xapi)))
    assert root.tag == "system-status-capabilities"
    caps = {c.get("key"): c for c in root.findall("capability")}
    assert {"xenserver-logs", "xenserver-databases", "system-logs"} <= set(caps)
    for c in caps.values():
        assert c.get("pii") in ("yes", "no", "maybe", "customized")
        assert c.get("content-type") in ("text/plain", "application/data")
        assert c.get("default-checked") in ("yes", "no")


def test_bugreport_upload_puts_a_report(xapi):
    host = the_host(xapi)
    with put_receiver() as (url, received):
        xapi.host.bugreport_upload(host, url + "/upload/", {})
        (path, body), = received
        assert path.startswith("/upload/") and path.endswith(".tar.gz")
        assert xapi.host.get_uuid(host) in gzip.decompress(body).decode()
    assert failure(xapi.host.bugreport_upload, host, "gopher://example/", {}) == [
        "INTERNAL_ERROR", "URL not recognised"]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert failure(xapi.host.bugreport_upload, host, f"http://127.0.0.1:{port}/", {}) == [
        "INTERNAL_ERROR", "Failed to connect to host"]


def test_single_host_no_ops(xapi):
    host = the_host(xapi)
    before = xapi.host.get_record(host)
    xapi.host.sync_data(host)
    xapi.host.backup_rrds(host, 0.0)
    xapi.host.refresh_pack_info(host)
    xapi.host.rescan_drivers(host)
    xapi.host.syslog_reconfigure(host)
    xapi.host.refresh_server_certificate(host)
    assert xapi.host.get_uncooperative_resident_VMs(host) == []
    after = xapi.host.get_record(host)
    assert {k: v for k, v in after.items() if k != "allowed_operations"} == \
        {k: v for k, v in before.items() if k != "allowed_operations"}


def test_tracked_user_agents(server, xapi):
    s = XenAPI.Session(server.http)
    s.xenapi.login_with_password("root", "test-root-pw", "2.21", "XenCenter/2024.3.1")
    try:
        agents = xapi.host.get_tracked_user_agents(the_host(xapi))
        assert agents["XenCenter"] == "2024.3.1"
    finally:
        s.xenapi.session.logout()


# ---- refusals a single host gives --------------------------------------------------------------

def test_what_a_lone_host_refuses(xapi):
    host = the_host(xapi)
    before = xapi.host.get_record(host)
    assert failure(xapi.host.declare_dead, host) == ["HOST_IS_LIVE", host]
    assert failure(xapi.host.power_on, host) == ["HOST_IS_LIVE", host]
    assert failure(xapi.host.emergency_ha_disable, False) == ["HA_NOT_ENABLED"]
    assert failure(xapi.host.retrieve_wlb_evacuate_recommendations, host) == [
        "WLB_NOT_INITIALIZED"]
    assert failure(xapi.host.apply_updates, host, "") == ["NO_REPOSITORY_ENABLED"]
    assert failure(xapi.host.local_management_reconfigure, "eth0") == ["NOT_IN_EMERGENCY_MODE"]
    assert failure(xapi.host.enable_external_auth, host, {}, "corp.example", "PAM") == [
        "AUTH_UNKNOWN_TYPE", "PAM"]
    assert failure(xapi.host.enable_external_auth, host, {"user": "a", "pass": "b"},
                   "corp.example", "AD")[0] == "AUTH_ENABLE_FAILED_DOMAIN_LOOKUP_FAILED"
    assert failure(xapi.host.external_auth_set_ldaps, host, True, False) == ["AUTH_IS_DISABLED"]
    xapi.host.disable_external_auth(host, {})  # none enabled: nothing to do
    assert xapi.host.get_record(host)["external_auth_type"] == ""
    after = xapi.host.get_record(host)
    assert {k: v for k, v in after.items() if k != "allowed_operations"} == \
        {k: v for k, v in before.items() if k != "allowed_operations"}


def test_plugins_and_extensions(xapi):
    host = the_host(xapi)
    assert failure(xapi.host.call_plugin, host, "no-such-plugin", "main", {}) == [
        "XENAPI_MISSING_PLUGIN", "no-such-plugin"]
    assert failure(xapi.host.call_plugin, host, "hyperthreading.py", "nope", {}) == [
        "UNKNOWN_XENAPI_PLUGIN_FUNCTION", "nope"]
    threads = int(xapi.host.get_cpu_info(host).get("threads_per_core", "1"))
    assert xapi.host.call_plugin(host, "hyperthreading.py", "get_hyperthreading", {}) == (
        "true" if threads > 1 else "false")
    assert xapi.host.call_plugin(host, "echo", "main", {"b": "2", "a": "1"}) == \
        "args were: {'a': '1', 'b': '2'}"
    assert xapi.host.call_plugin(host, "updater.py", "check_update", {}) == "[]"
    assert xapi.host.has_extension(host, "Echo") is False
    assert failure(xapi.host.call_extension, host,
                   '{"method": "Echo.echo", "params": [], "id": 1}') == [
        "MESSAGE_METHOD_UNKNOWN", "Echo.echo"]
    assert failure(xapi.host.call_extension, host, "not json")[0] == "INTERNAL_ERROR"


def test_licensing_xcp_ng_edition(xapi):
    host = the_host(xapi)
    edition = xapi.host.get_edition(host)
    assert failure(xapi.host.apply_edition, host, "enterprise-per-socket", False) == [
        "INVALID_EDITION", "enterprise-per-socket"]
    assert failure(xapi.host.license_add, host, "not base64 !") == ["LICENSE_PROCESSING_ERROR"]
    assert failure(xapi.host.license_add, host,
                   base64.b64encode(b"<license/>").decode()) == ["LICENSE_PROCESSING_ERROR"]
    assert xapi.host.get_edition(host) == edition
    xapi.host.apply_edition(host, "xcp-ng", False)
    xapi.host.license_remove(host)
    assert xapi.host.get_edition(host) == "xcp-ng"


# ---- memory -------------------------------------------------------------------------------------

def test_free_memory_follows_running_vms(fresh):
    srv, x = fresh
    host = the_host(x)
    overhead = x.host.compute_memory_overhead(host)
    assert int(overhead) == int(x.host.get_memory_overhead(host)) > 0
    free0 = int(x.host.compute_free_memory(host))
    assert free0 == int(x.host.query_data_source(host, "memory_free_kib")) * 1024
    total = int(x.host_metrics.get_memory_total(x.host.get_metrics(host)))
    assert 0 < free0 < total
    vm = running_vm(x, "fixed", GiB)
    cost = GiB + int(x.VM.get_memory_overhead(vm))
    free1 = int(x.host.compute_free_memory(host))
    assert free1 == free0 - cost
    assert free1 == int(x.host.query_data_source(host, "memory_free_kib")) * 1024
    # a VM that may balloon down to 512 MiB: that much more could be freed
    squeezable = running_vm(x, "balloon", GiB, dynamic_min=512 * MiB)
    free2 = int(x.host.compute_free_memory(host))
    hard_free = int(x.host.query_data_source(host, "memory_free_kib")) * 1024
    assert hard_free == free1 - GiB - int(x.VM.get_memory_overhead(squeezable))
    assert free2 == hard_free + 512 * MiB
    x.VM.hard_shutdown(vm)
    x.VM.hard_shutdown(squeezable)
    assert int(x.host.compute_free_memory(host)) == free0


# ---- enable / disable, reboot, shutdown, power on -----------------------------------------------

def test_disable_blocks_vm_start_and_enable_restores(fresh):
    srv, x = fresh
    host = the_host(x)
    assert x.host.get_enabled(host) is True
    ops = x.host.get_allowed_operations(host)
    assert "reboot" not in ops and "shutdown" not in ops and "vm_start" in ops
    assert failure(x.host.reboot, host) == ["HOST_NOT_DISABLED"]
    assert failure(x.host.shutdown, host) == ["HOST_NOT_DISABLED"]
    vm = x.VM.create(vm_args("blocked"))
    x.host.disable(host)
    x.host.disable(host)  # again: nothing to do
    assert x.host.get_enabled(host) is False
    assert {"reboot", "shutdown"} <= set(x.host.get_allowed_operations(host))
    assert failure(x.VM.start, vm, False, False) == ["HOST_DISABLED", host]
    assert x.VM.get_power_state(vm) == "Halted"
    x.host.enable(host)
    assert x.host.get_enabled(host) is True
    assert "reboot" not in x.host.get_allowed_operations(host)
    x.VM.start(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"


def test_reboot_needs_an_idle_disabled_host_and_comes_back(fresh):
    srv, x = fresh
    host = the_host(x)
    metrics = x.host.get_metrics(host)
    vm = running_vm(x, "guest")
    x.host.disable(host)
    assert failure(x.host.reboot, host) == ["HOST_IN_USE", host, "vm", vm]
    assert x.host_metrics.get_live(metrics) is True
    assert x.host.get_current_operations(host) == {}
    x.VM.pause(vm)  # a paused guest does not keep the host up; it dies with it
    boot_before = x.host.get_other_config(host).get("boot_time")
    x.host.reboot(host)
    (task, op), = x.host.get_current_operations(host).items()
    assert op == "reboot"
    assert failure(x.host.shutdown, host) == [
        "OTHER_OPERATION_IN_PROGRESS", "host", host, "reboot", task]
    assert failure(x.host.enable, host) == ["HOST_DISABLED_UNTIL_REBOOT", host]
    wait_for(lambda: not x.host_metrics.get_live(metrics))
    wait_for(lambda: x.host_metrics.get_live(metrics) and x.host.get_enabled(host))
    assert x.host.get_current_operations(host) == {}
    assert x.host.get_other_config(host)["boot_time"] != boot_before
    assert "reboot" not in x.host.get_allowed_operations(host)
    assert x.VM.get_power_state(vm) == "Halted" and x.VM.get_resident_on(vm) == "OpaqueRef:NULL"
    x.VM.start(vm, False, False)  # the host takes VMs again


def test_shutdown_then_power_on(fresh):
    srv, x = fresh
    host = the_host(x)
    metrics = x.host.get_metrics(host)
    vm = x.VM.create(vm_args("after-power-on"))
    x.host.disable(host)
    x.host.shutdown(host)
    wait_for(lambda: not x.host_metrics.get_live(metrics))
    assert x.host.get_enabled(host) is False
    assert failure(x.host.enable, host) == ["HOST_DISABLED_UNTIL_REBOOT", host]
    assert failure(x.VM.start, vm, False, False) == ["HOST_NOT_LIVE"]
    assert x.host.get_power_on_mode(host) == ""
    assert "power_on" not in x.host.get_allowed_operations(host)
    assert failure(x.host.power_on, host) == ["HOST_POWER_ON_MODE_DISABLED"]
    x.host.set_power_on_mode(host, "wake-on-lan", {})
    assert "power_on" in x.host.get_allowed_operations(host)
    x.host.power_on(host)
    assert x.host_metrics.get_live(metrics) is True and x.host.get_enabled(host) is True
    assert failure(x.host.power_on, host) == ["HOST_IS_LIVE", host]
    x.VM.start(vm, False, False)


def test_display_follows_reboot(fresh):
    srv, x = fresh
    host = the_host(x)
    assert x.host.get_display(host) == "enabled"
    assert x.host.disable_display(host) == "disable_on_reboot"
    assert x.host.enable_display(host) == "enabled"
    assert x.host.disable_display(host) == "disable_on_reboot"
    assert x.host.disable_display(host) == "disable_on_reboot"
    x.host.disable(host)
    x.host.reboot(host)
    wait_for(lambda: x.host.get_enabled(host))
    assert x.host.get_display(host) == "disabled"
    assert x.host.enable_display(host) == "enable_on_reboot"
    assert x.host.disable_display(host) == "disabled"


# ---- evacuation -----------------------------------------------------------------------------------

def test_evacuation_has_nowhere_to_go(fresh):
    srv, x = fresh
    host = the_host(x)
    assert x.host.get_vms_which_prevent_evacuation(host) == {}
    x.host.assert_can_evacuate(host)
    x.host.evacuate(host, "OpaqueRef:NULL", 0)
    vm = running_vm(x, "stuck")
    assert x.host.get_vms_which_prevent_evacuation(host) == {vm: ["NO_HOSTS_AVAILABLE", vm]}
    assert failure(x.host.assert_can_evacuate, host) == [
        "CANNOT_EVACUATE_HOST", f"NO_HOSTS_AVAILABLE,{vm}"]
    assert failure(x.host.evacuate, host, "OpaqueRef:NULL", 0) == ["NO_HOSTS_AVAILABLE", vm]
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_resident_on(vm) == host
    assert x.host.get_current_operations(host) == {}
    assert "evacuate" in x.host.get_allowed_operations(host)


# ---- names, management interface ----------------------------------------------------------------

def test_set_hostname_live(fresh):
    srv, x = fresh
    host = the_host(x)
    old = x.host.get_hostname(host)
    for bad, why in (("", "hostname empty"), ("a" * 256, "hostname is too long"),
                     ("-lead", "hostname contains invalid characters"),
                     ("trail-", "hostname contains invalid characters"),
                     ("under_score", "hostname contains invalid characters"),
                     ("sp ace", "hostname contains invalid characters")):
        assert failure(x.host.set_hostname_live, host, bad) == ["HOST_NAME_INVALID", why]
    assert x.host.get_hostname(host) == old
    x.host.set_hostname_live(host, "xcp-lab-01.example.org")
    assert x.host.get_hostname(host) == "xcp-lab-01.example.org"
    dom0 = x.host.get_control_domain(host)
    assert x.VM.get_name_label(dom0) == "Control domain on host: xcp-lab-01.example.org"


def test_management_interface(fresh):
    srv, x = fresh
    host = the_host(x)
    mgmt = x.host.get_management_interface(host)
    assert x.PIF.get_management(mgmt) is True and x.PIF.get_host(mgmt) == host
    other = next(p for p in x.host.get_PIFs(host)
                 if p != mgmt and x.PIF.get_physical(p))
    assert failure(x.host.management_reconfigure, other) == [
        "PIF_HAS_NO_NETWORK_CONFIGURATION", other]
    assert x.host.get_management_interface(host) == mgmt
    x.host.management_reconfigure(mgmt)  # already the one: nothing to do
    x.PIF.reconfigure_ip(other, "Static", "10.0.1.2", "255.255.255.0", "", "")
    x.host.management_reconfigure(other)
    assert x.host.get_management_interface(host) == other
    assert x.PIF.get_management(mgmt) is False
    assert x.host.get_address(host) == "10.0.1.2"
    x.host.management_disable()
    assert not any(x.PIF.get_management(p) for p in x.host.get_PIFs(host))
    assert failure(x.host.get_management_interface, host)[0] == "INTERNAL_ERROR"
    x.host.management_reconfigure(mgmt)
    assert x.host.get_management_interface(host) == mgmt


# ---- ssh, scheduler, caching, TLS verification ------------------------------------------------

def test_ssh_and_sched_gran(fresh):
    srv, x = fresh
    host = the_host(x)
    x.host.enable_ssh(host)
    assert x.host.get_ssh_enabled(host) is True
    x.host.disable_ssh(host)
    assert x.host.get_ssh_enabled(host) is False
    x.host.set_ssh_enabled_timeout(host, 600)
    x.host.enable_ssh(host)
    expiry = as_datetime(x.host.get_ssh_expiry(host))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert 590 <= (expiry - now).total_seconds() <= 610
    assert x.host.get_sched_gran(host) == "cpu"
    x.host.set_sched_gran(host, "core")
    assert x.host.get_sched_gran(host) == "core"
    assert failure(x.host.set_sched_gran, host, "thread")[0] == "INVALID_VALUE"
    assert x.host.get_sched_gran(host) == "core"
    srv.stop()
    again = srv.__class__(srv.state_dir)  # the setting is the host's: kept across a restart
    try:
        assert again.session().xenapi.host.get_sched_gran(host) == "core"
    finally:
        again.stop()


def test_local_storage_caching(fresh):
    srv, x = fresh
    host = the_host(x)
    local = x.SR.get_by_name_label("Local storage")[0]
    iso = x.SR.get_by_name_label("ISO library")[0]
    assert failure(x.host.enable_local_storage_caching, host, local) == ["HOST_NOT_DISABLED"]
    x.host.disable(host)
    assert failure(x.host.enable_local_storage_caching, host, iso) == [
        "SR_OPERATION_NOT_SUPPORTED", iso]
    assert x.host.get_local_cache_sr(host) == "OpaqueRef:NULL"
    x.host.enable_local_storage_caching(host, local)
    assert x.host.get_local_cache_sr(host) == local
    assert x.SR.get_local_cache_enabled(local) is True
    x.host.disable_local_storage_caching(host)
    assert x.host.get_local_cache_sr(host) == "OpaqueRef:NULL"
    assert x.SR.get_local_cache_enabled(local) is False


def test_emergency_tls_and_guidance(fresh):
    srv, x = fresh
    host = the_host(x)
    x.host.emergency_disable_tls_verification()
    assert x.host.get_tls_verification_enabled(host) is False
    x.host.emergency_reenable_tls_verification()
    assert x.host.get_tls_verification_enabled(host) is True
    x.host.emergency_clear_mandatory_guidance()
    assert x.host.get_pending_guidances(host) == []


# ---- the TLS server certificate -------------------------------------------------------------------

def _served_certificate(url: str) -> str:
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    return ssl.get_server_certificate((host, int(port)))


def _self_signed(days_from=-1, days_to=30):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyxapi-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=days_from))
            .not_valid_after(now + dt.timedelta(days=days_to)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def test_server_certificate_is_the_one_https_serves(server, xapi):
    pem = xapi.host.get_server_certificate(the_host(xapi))
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert ssl.PEM_cert_to_DER_cert(pem) == ssl.PEM_cert_to_DER_cert(
        _served_certificate(server.https))


def test_install_and_reset_server_certificate(fresh):
    srv, x = fresh
    host = the_host(x)
    original = x.host.get_server_certificate(host)
    cert, key = _self_signed()
    other_cert, other_key = _self_signed()
    assert failure(x.host.install_server_certificate, host, cert, "junk", "") == [
        "SERVER_CERTIFICATE_KEY_INVALID"]
    assert failure(x.host.install_server_certificate, host, "junk", key, "") == [
        "SERVER_CERTIFICATE_INVALID"]
    assert failure(x.host.install_server_certificate, host, cert, other_key, "") == [
        "SERVER_CERTIFICATE_KEY_MISMATCH"]
    old_cert, old_key = _self_signed(days_from=-30, days_to=-1)
    assert failure(x.host.install_server_certificate, host, old_cert, old_key, "")[0] == \
        "SERVER_CERTIFICATE_EXPIRED"
    assert failure(x.host.install_server_certificate, host, cert, key, "junk") == [
        "SERVER_CERTIFICATE_CHAIN_INVALID"]
    assert x.host.get_server_certificate(host) == original
    x.host.install_server_certificate(host, cert, key, "")
    assert x.host.get_server_certificate(host) == cert
    (c,) = x.host.get_certificates(host)
    assert x.Certificate.get_type(c) == "host"
    # the agent serves it from its next start
    srv.stop()
    again = srv.__class__(srv.state_dir)
    try:
        assert ssl.PEM_cert_to_DER_cert(_served_certificate(again.https)) == \
            ssl.PEM_cert_to_DER_cert(cert)
        y = again.session().xenapi
        y.host.reset_server_certificate(host)
        fresh_pem = y.host.get_server_certificate(host)
        assert fresh_pem != cert and fresh_pem.startswith("-----BEGIN CERTIFICATE-----")
        (c2,) = y.host.get_certificates(host)
        assert c2 != c
        second = y.Certificate.get_fingerprint_sha256(c2)
        y.host.emergency_reset_server_certificate()
        assert y.host.get_server_certificate(host) not in (fresh_pem, cert)
        (c3,) = y.host.get_certificates(host)
        assert y.Certificate.get_fingerprint_sha256(c3) != second
    finally:
        again.stop()


# ---- the agent ----------------------------------------------------------------------------------

def test_restart_agent_keeps_sessions(fresh):
    srv, x = fresh
    host = the_host(x)
    other = x.host.get_other_config(host)
    started, booted = other["agent_start_time"], other["boot_time"]
    assert float(booted) <= float(started) + 1 <= time.time() + 1
    x.host.disable(host)
    x.host.restart_agent(host)
    wait_for(lambda: x.host.get_other_config(host)["agent_start_time"] != started)
    # the same session still works, and xapi's default auto_enable enabled the host again
    assert x.host.get_enabled(host) is True
    assert x.host.get_other_config(host)["boot_time"] == booted  # the agent restarted, not the host


def test_shutdown_agent_stops_the_server(fresh):
    srv, x = fresh
    x.host.shutdown_agent()
    assert srv.proc.wait(timeout=30) == 0


# ---- data sources ---------------------------------------------------------------------------------

def test_host_data_sources(fresh):
    srv, x = fresh
    host = the_host(x)
    sources = {d["name_label"]: d for d in x.host.get_data_sources(host)}
    ncpu = int(x.host.get_cpu_info(host)["cpu_count"])
    assert {f"cpu{i}" for i in range(ncpu)} <= set(sources)
    for name in ("memory_total_kib", "memory_free_kib", "cpu0", "loadavg"):
        assert sources[name]["enabled"] is True and sources[name]["standard"] is True
    assert sources["memory_total_kib"]["units"] == "KiB"
    total = int(x.host_metrics.get_memory_total(x.host.get_metrics(host)))
    assert x.host.query_data_source(host, "memory_total_kib") == total / 1024
    assert 0.0 <= x.host.query_data_source(host, "cpu0") <= 1.0
    assert failure(x.host.query_data_source, host, "no_such_ds")[0] == "INTERNAL_ERROR"
    assert failure(x.host.record_data_source, host, "no_such_ds")[0] == "INTERNAL_ERROR"
    # a non-standard source: recorded only on request, forgotten on request
    assert sources["xapi_open_fds"]["standard"] is False
    assert sources["xapi_open_fds"]["enabled"] is False
    assert failure(x.host.query_data_source, host, "xapi_open_fds")[0] == "INTERNAL_ERROR"
    x.host.record_data_source(host, "xapi_open_fds")
    assert x.host.query_data_source(host, "xapi_open_fds") > 0
    assert {d["name_label"]: d["enabled"] for d in x.host.get_data_sources(host)}[
        "xapi_open_fds"] is True
    x.host.forget_data_source_archives(host, "xapi_open_fds")
    assert failure(x.host.query_data_source, host, "xapi_open_fds")[0] == "INTERNAL_ERROR"
    x.host.forget_data_source_archives(host, "memory_free_kib")  # standard: recorded again
    assert x.host.query_data_source(host, "memory_free_kib") > 0


def test_vm_and_sr_data_sources(xapi):
    vm = xapi.VM.create(vm_args("ds-vm", GiB, vcpus=2))
    try:
        assert xapi.VM.get_data_sources(vm) == []
        assert failure(xapi.VM.query_data_source, vm, "memory")[0] == "VM_BAD_POWER_STATE"
        assert failure(xapi.VM.record_data_source, vm, "memory")[0] == "VM_BAD_POWER_STATE"
        xapi.VM.start(vm, False, False)
        names = {d["name_label"] for d in xapi.VM.get_data_sources(vm)}
        assert {"cpu0", "cpu1", "memory", "memory_target"} <= names
        actual = int(xapi.VM_metrics.get_memory_actual(xapi.VM.get_metrics(vm)))
        assert xapi.VM.query_data_source(vm, "memory") == actual
        assert 0.0 <= xapi.VM.query_data_source(vm, "cpu1") <= 1.0
        assert failure(xapi.VM.query_data_source, vm, "cpu7")[0] == "INTERNAL_ERROR"
        assert failure(xapi.VM.query_data_source, vm, "runstate_fullrun")[0] == "INTERNAL_ERROR"
        xapi.VM.record_data_source(vm, "runstate_fullrun")
        assert 0.0 <= xapi.VM.query_data_source(vm, "runstate_fullrun") <= 1.0
        xapi.VM.forget_data_source_archives(vm, "runstate_fullrun")
        assert failure(xapi.VM.query_data_source, vm, "runstate_fullrun")[0] == "INTERNAL_ERROR"
    finally:
        xapi.VM.hard_shutdown(vm)
        xapi.VM.destroy(vm)
    dom0 = xapi.host.get_control_domain(the_host(xapi))
    assert xapi.VM.query_data_source(dom0, "memory") > 0
    local = xapi.SR.get_by_name_label("Local storage")[0]
    names = {d["name_label"] for d in xapi.SR.get_data_sources(local)}
    assert {"io_throughput_read", "io_throughput_write", "latency"} <= names
    assert xapi.SR.query_data_source(local, "io_throughput_read") >= 0.0
    assert failure(xapi.SR.query_data_source, local, "no_such_ds")[0] == "INTERNAL_ERROR"


def test_migrate_receive_names_this_host(xapi):
    host = the_host(xapi)
    mgmt = xapi.host.get_management_interface(host)
    dest = xapi.host.migrate_receive(host, xapi.PIF.get_network(mgmt), {})
    assert dest["host"] == host
    ip = xapi.PIF.get_IP(mgmt)
    assert dest["xenops"].startswith(f"http://{ip}/services/xenops?session_id=")
    assert dest["SM"].startswith(f"http://{ip}/services/SM?session_id=")
    assert set(dest) == {"SM", "xenops", "host", "session_id", "master"}
    internal = next(n for n in xapi.network.get_all()
                    if xapi.network.get_other_config(n).get("is_host_internal_management_network"))
    assert failure(xapi.host.migrate_receive, host, internal, {}) == [
        "HOST_CANNOT_ATTACH_NETWORK", host, internal]
    unconfigured = next((p for p in xapi.host.get_PIFs(host)
                         if xapi.PIF.get_ip_configuration_mode(p) == "None"), None)
    if unconfigured is not None:
        assert failure(xapi.host.migrate_receive, host, xapi.PIF.get_network(unconfigured),
                       {}) == ["INTERFACE_HAS_NO_IP", unconfigured]


def test_guest_agent_memory_data_source(xapi):
    """memory_internal_free exists once the guest agent has reported."""
    vm = new_vm(xapi, "ds-agent")
    try:
        xapi.VM.start(vm, False, False)
        wait_for(lambda: xapi.VM.get_guest_metrics(vm) != "OpaqueRef:NULL")
        sources = {d["name_label"]: d for d in xapi.VM.get_data_sources(vm)}
        assert sources["memory_internal_free"]["units"] == "KiB"
        free = xapi.VM.query_data_source(vm, "memory_internal_free")
        assert 0 < free * 1024 < xapi.VM.query_data_source(vm, "memory")
    finally:
        xapi.VM.hard_shutdown(vm)
        xapi.VM.destroy(vm)
