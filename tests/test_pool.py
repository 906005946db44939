"""Pool actions of a one-host pool through XenAPI.py: what the host can do changes state,
what needs another host or an outside service fails with xapi's error and changes nothing."""
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import NULL, failure, new_network, the_host, the_pool


def local_sr(x):
    [sr] = x.SR.get_by_name_label("Local storage")
    return sr


def iso_sr(x):
    [sr] = x.SR.get_by_name_label("ISO library")
    return sr


@pytest.fixture
def fresh(fresh_server):
    return fresh_server().session("http").xenapi


def _key_and_name(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    return key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(cn="test CA", *, days=30, starts_in_days=-1):
    key, name = _key_and_name(cn)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=starts_in_days)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert


def make_crl():
    key, name = _key_and_name("test CRL issuer")
    t = dt.datetime.now(dt.UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(name).last_update(t)
           .next_update(t + dt.timedelta(days=7)).sign(key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.PEM).decode()


# ---- settings applied to every host -------------------------------------------------------

def test_ssh_enable_disable_and_timeouts(fresh):
    x = fresh
    pool, host = the_pool(x), the_host(x)
    x.pool.set_ssh_auto_mode(pool, True)
    assert x.host.get_ssh_auto_mode(host) is True
    x.pool.disable_ssh(pool)
    assert x.host.get_ssh_enabled(host) is False
    x.pool.set_ssh_enabled_timeout(pool, "600")
    assert int(x.host.get_ssh_enabled_timeout(host)) == 600
    x.pool.enable_ssh(pool)
    rec = x.host.get_record(host)
    assert rec["ssh_enabled"] is True
    expiry = dt.datetime.strptime(rec["ssh_expiry"].value, "%Y%m%dT%H:%M:%SZ")
    assert dt.timedelta(seconds=500) < expiry - dt.datetime.now(dt.UTC).replace(tzinfo=None) \
        <= dt.timedelta(seconds=601)
    # out of range (0 .. 2 days): the host refuses, the pool names the hosts that failed
    for bad in ("-1", "172801"):
        assert failure(x.pool.set_ssh_enabled_timeout, pool, bad) == \
            ["SET_SSH_TIMEOUT_PARTIALLY_FAILED", host]
    assert int(x.host.get_ssh_enabled_timeout(host)) == 600
    x.pool.set_ssh_enabled_timeout(pool, "172800")
    x.pool.set_console_idle_timeout(pool, "300")
    assert int(x.host.get_console_idle_timeout(host)) == 300
    assert failure(x.pool.set_console_idle_timeout, pool, "-5") == \
        ["SET_CONSOLE_TIMEOUT_PARTIALLY_FAILED", host]
    assert int(x.host.get_console_idle_timeout(host)) == 300


def test_https_only_tls_and_client_certificate_settings(fresh):
    x = fresh
    pool, host = the_pool(x), the_host(x)
    x.pool.set_https_only(pool, True)
    assert x.host.get_https_only(host) is True
    x.pool.set_https_only(pool, False)
    assert x.host.get_https_only(host) is False
    x.pool.enable_tls_verification()
    assert x.pool.get_tls_verification_enabled(pool) is True
    assert x.host.get_tls_verification_enabled(host) is True
    x.pool.enable_client_certificate_auth(pool, "ops")
    rec = x.pool.get_record(pool)
    assert rec["client_certificate_auth_enabled"] is True and rec["client_certificate_auth_name"] == "ops"
    x.pool.disable_client_certificate_auth(pool)
    rec = x.pool.get_record(pool)
    assert rec["client_certificate_auth_enabled"] is False and rec["client_certificate_auth_name"] == ""
    x.pool.disable_ssl_legacy(pool)
    assert x.host.get_ssl_legacy(host) is False


def test_telemetry_update_sync_and_no_op_calls(fresh):
    x = fresh
    pool = the_pool(x)
    x.pool.reset_telemetry_uuid(pool)
    first = x.pool.get_telemetry_uuid(pool)
    assert first != NULL and len(x.secret.get_value(first)) == 36
    x.pool.reset_telemetry_uuid(pool)
    second = x.pool.get_telemetry_uuid(pool)
    assert second != first and first not in x.secret.get_all()
    x.pool.configure_update_sync(pool, "weekly", "3")
    assert x.pool.get_update_sync_frequency(pool) == "weekly"
    assert int(x.pool.get_update_sync_day(pool)) == 3
    assert failure(x.pool.configure_update_sync, pool, "weekly", "7") == ["INVALID_UPDATE_SYNC_DAY", "7"]
    assert failure(x.pool.configure_update_sync, pool, "monthly", "1")[0] == "INVALID_VALUE"
    assert int(x.pool.get_update_sync_day(pool)) == 3
    x.pool.configure_update_sync(pool, "daily", "5")
    assert x.pool.get_update_sync_frequency(pool) == "daily"
    assert int(x.pool.get_update_sync_day(pool)) == 0
    # calls whose work is among members: with one host they succeed and change nothing
    before = x.pool.get_record(pool)
    x.pool.sync_database()
    x.pool.certificate_sync()
    x.pool.rotate_secret()
    x.pool.detect_nonhomogeneous_external_auth(pool)
    x.pool.ha_prevent_restarts_for("60")
    assert x.pool.recover_slaves() == []
    x.pool.designate_new_master(the_host(x))
    x.pool.emergency_transition_to_master()
    assert x.pool.get_record(pool) == before
    assert failure(x.pool.test_archive_target, pool, {}) == ["MESSAGE_REMOVED"]


def test_license_edition_extension_and_secureboot(xapi):
    x = xapi
    pool = the_pool(x)
    state = x.pool.get_license_state(pool)
    assert state == {"edition": "xcp-ng", "expiry": "never"}
    x.pool.apply_edition(pool, "xcp-ng")
    assert failure(x.pool.apply_edition, pool, "enterprise-per-socket") == \
        ["INVALID_EDITION", "enterprise-per-socket"]
    assert x.host.get_edition(the_host(x)) == "xcp-ng"
    assert x.pool.has_extension(pool, "Test.test") is False
    assert x.pool.get_guest_secureboot_readiness(pool) == "not_ready"


# ---- certificates -------------------------------------------------------------------------

def test_ca_certificates_by_name(fresh):
    x = fresh
    pem, cert = make_cert()
    x.pool.install_ca_certificate("corp-ca", pem)
    assert "corp-ca" in x.pool.certificate_list()
    [ref] = [r for r, c in x.Certificate.get_all_records().items() if c["name"] == "corp-ca"]
    rec = x.Certificate.get_record(ref)
    assert rec["type"] == "ca" and rec["host"] == NULL
    assert rec["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    count = len(x.Certificate.get_all())
    assert failure(x.pool.install_ca_certificate, "corp-ca", pem) == \
        ["CERTIFICATE_ALREADY_EXISTS", "corp-ca"]
    assert failure(x.pool.certificate_install, "bad/name", pem) == ["CERTIFICATE_NAME_INVALID", "bad/name"]
    assert failure(x.pool.certificate_install, ".hidden", pem) == ["CERTIFICATE_NAME_INVALID", ".hidden"]
    assert failure(x.pool.certificate_install, "junk", "not a certificate") == \
        ["CERTIFICATE_CORRUPT", "junk"]
    assert len(x.Certificate.get_all()) == count
    x.pool.certificate_install("other-ca", make_cert("other")[0])
    assert x.pool.certificate_list() == ["corp-ca", "other-ca"]
    x.pool.certificate_uninstall("other-ca")
    x.pool.uninstall_ca_certificate("corp-ca", False)
    assert x.pool.certificate_list() == []
    assert failure(x.pool.certificate_uninstall, "corp-ca") == ["CERTIFICATE_DOES_NOT_EXIST", "corp-ca"]
    assert failure(x.pool.uninstall_ca_certificate, "corp-ca", False) == \
        ["CERTIFICATE_DOES_NOT_EXIST", "corp-ca"]
    x.pool.uninstall_ca_certificate("corp-ca", True)  # force: a missing one is fine


def test_trusted_certificates(fresh):
    x = fresh
    pool = the_pool(x)
    pem, cert = make_cert("trusted")
    x.pool.install_trusted_certificate(pool, True, pem, [])
    prints = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    [ref] = [r for r, c in x.Certificate.get_all_records().items() if c["fingerprint_sha256"] == prints]
    assert x.Certificate.get_type(ref) == "ca"
    count = len(x.Certificate.get_all())
    assert failure(x.pool.install_trusted_certificate, pool, True, pem, []) == \
        ["TRUSTED_CERTIFICATE_ALREADY_EXISTS", prints]
    assert failure(x.pool.install_trusted_certificate, pool, False, make_cert()[0], []) == \
        ["CERTIFICATE_LACKS_PURPOSE"]
    assert failure(x.pool.install_trusted_certificate, pool, True, "garbage", []) == \
        ["TRUSTED_CERTIFICATE_INVALID"]
    expired = make_cert(days=1, starts_in_days=-10)[0]
    assert failure(x.pool.install_trusted_certificate, pool, True, expired, [])[0] == \
        "TRUSTED_CERTIFICATE_EXPIRED"
    future = make_cert(starts_in_days=10)[0]
    assert failure(x.pool.install_trusted_certificate, pool, True, future, [])[0] == \
        "TRUSTED_CERTIFICATE_NOT_VALID_YET"
    assert len(x.Certificate.get_all()) == count
    x.pool.install_trusted_certificate(pool, False, make_cert("pin")[0], ["ldaps"])
    [pinned] = [r for r, c in x.Certificate.get_all_records().items() if c["type"] == "pinned"]
    assert x.Certificate.get_purpose(pinned) == ["ldaps"]
    x.pool.uninstall_trusted_certificate(pool, pinned)
    x.pool.uninstall_trusted_certificate(pool, ref)
    assert failure(x.pool.uninstall_trusted_certificate, pool, ref) == ["HANDLE_INVALID", "Certificate", ref]
    hosts = [r for r, c in x.Certificate.get_all_records().items() if c["type"] == "host"]
    for r in hosts:
        assert failure(x.pool.uninstall_trusted_certificate, pool, r) == ["NOT_TRUSTED_CERTIFICATE", r]


def test_crls(fresh):
    x = fresh
    crl = make_crl()
    x.pool.crl_install("revoked", crl)
    assert x.pool.crl_list() == ["revoked"]
    assert failure(x.pool.crl_install, "revoked", crl) == ["CRL_ALREADY_EXISTS", "revoked"]
    assert failure(x.pool.crl_install, "../x", crl) == ["CRL_NAME_INVALID", "../x"]
    assert failure(x.pool.crl_install, "broken", "-----BEGIN X509 CRL-----") == ["CRL_CORRUPT", "broken"]
    assert x.pool.crl_list() == ["revoked"]
    x.pool.crl_uninstall("revoked")
    assert x.pool.crl_list() == []
    assert failure(x.pool.crl_uninstall, "revoked") == ["CRL_DOES_NOT_EXIST", "revoked"]


# ---- HA and the redo log ------------------------------------------------------------------

def test_ha_errors_change_nothing(xapi):
    x = xapi
    pool = the_pool(x)
    before = x.pool.get_record(pool)
    assert failure(x.pool.disable_ha) == ["HA_NOT_ENABLED"]
    # an ISO SR cannot hold a statefile
    assert failure(x.pool.enable_ha, [iso_sr(x)], {}) == ["SR_OPERATION_NOT_SUPPORTED", iso_sr(x)]
    assert x.pool.get_record(pool) == before
    assert int(x.pool.ha_compute_max_host_failures_to_tolerate()) == 0
    [dom0] = x.VM.get_all_records_where('field "is_control_domain"="true"')
    assert int(x.pool.ha_compute_hypothetical_max_host_failures_to_tolerate({dom0: "restart"})) == 0
    assert failure(x.pool.ha_compute_hypothetical_max_host_failures_to_tolerate,
                   {dom0: "sometimes"}) == ["INVALID_VALUE", "ha_restart_priority", "sometimes"]
    assert x.pool.ha_failover_plan_exists("0") is True


def test_ha_enable_disable_on_local_storage(fresh):
    x = fresh
    pool, sr = the_pool(x), local_sr(x)
    x.pool.enable_ha([], {"timeout": "60"})
    rec = x.pool.get_record(pool)
    assert rec["ha_enabled"] is True and rec["ha_configuration"] == {"timeout": "60"}
    [statefile] = rec["ha_statefiles"]
    assert x.VDI.get_type(statefile) == "ha_statefile" and x.VDI.get_SR(statefile) == sr
    assert any(x.VDI.get_type(v) == "metadata" for v in x.SR.get_VDIs(sr))
    # with HA on, membership and management changes are refused
    assert failure(x.pool.enable_ha, [], {}) == ["HA_IS_ENABLED"]
    assert failure(x.pool.eject, the_host(x)) == ["HA_IS_ENABLED"]
    assert failure(x.pool.join, "192.0.2.1", "root", "x") == ["HA_IS_ENABLED"]
    assert failure(x.pool.rotate_secret) == ["HA_IS_ENABLED"]
    assert failure(x.pool.emergency_transition_to_master) == ["HA_IS_ENABLED"]
    assert failure(x.pool.emergency_reset_master, "127.0.0.1") == ["HA_IS_ENABLED"]
    net = x.PIF.get_network(x.host.get_management_interface(the_host(x)))
    assert failure(x.pool.management_reconfigure, net) == ["HA_IS_ENABLED"]
    assert x.pool.check_update_readiness(pool, False) == [["HA_IS_ENABLED"]]
    x.pool.disable_ha()
    rec = x.pool.get_record(pool)
    assert rec["ha_enabled"] is False and rec["ha_statefiles"] == []
    assert statefile in x.SR.get_VDIs(sr)  # kept for the next enable, as xapi does
    x.pool.enable_ha([sr], {})
    assert x.pool.get_ha_statefiles(pool) == [statefile]
    x.pool.disable_ha()


def test_failover_plan(xapi):
    x = xapi
    host = the_host(x)
    [dom0] = x.VM.get_all_records_where('field "is_control_domain"="true"')
    plan = x.pool.ha_compute_vm_failover_plan([], [dom0])
    assert plan == {dom0: {"host": host}}
    plan = x.pool.ha_compute_vm_failover_plan([host], [dom0])
    assert plan[dom0]["error_code"] in ("HOST_NOT_ENOUGH_FREE_MEMORY",
                                        "HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED",
                                        "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED")


def test_redo_log(fresh):
    x = fresh
    pool = the_pool(x)
    assert failure(x.pool.enable_redo_log, iso_sr(x)) == \
        ["CANNOT_ENABLE_REDO_LOG", "failed to create a VDI for the redo log on the SR with the given UUID."]
    assert x.pool.get_redo_log_enabled(pool) is False
    x.pool.enable_redo_log(local_sr(x))
    rec = x.pool.get_record(pool)
    assert rec["redo_log_enabled"] is True and x.VDI.get_type(rec["redo_log_vdi"]) == "redo_log"
    assert failure(x.pool.enable_ha, [], {}) == ["REDO_LOG_IS_ENABLED"]
    x.pool.disable_redo_log()
    assert x.pool.get_redo_log_enabled(pool) is False


def test_local_storage_caching(fresh):
    x = fresh
    pool, host, sr = the_pool(x), the_host(x), local_sr(x)
    # the host must be disabled (and run no guest) first: xapi names the hosts that refused
    assert failure(x.pool.enable_local_storage_caching, pool) == ["HOSTS_FAILED_TO_ENABLE_CACHING", host]
    assert failure(x.pool.disable_local_storage_caching, pool) == ["HOSTS_FAILED_TO_DISABLE_CACHING", host]
    assert x.host.get_local_cache_sr(host) == NULL
    x.host.disable(host)
    x.pool.enable_local_storage_caching(pool)
    assert x.host.get_local_cache_sr(host) == sr and x.SR.get_local_cache_enabled(sr) is True
    x.pool.disable_local_storage_caching(pool)
    assert x.host.get_local_cache_sr(host) == NULL and x.SR.get_local_cache_enabled(sr) is False
    x.host.enable(host)


# ---- networking ---------------------------------------------------------------------------

def test_create_vlan_on_every_host(fresh):
    x = fresh
    net = new_network(x, "vlan 42")
    [pif] = x.pool.create_VLAN("eth0", net, "42")
    rec = x.PIF.get_record(pif)
    assert rec["VLAN"] == "42" and rec["network"] == net and rec["device"] == "eth0"
    assert rec["currently_attached"] is True and rec["host"] == the_host(x)
    pifs = len(x.PIF.get_all())
    assert failure(x.pool.create_VLAN, "eth0", new_network(x, "dup"), "42")[0] == "PIF_VLAN_EXISTS"
    assert failure(x.pool.create_VLAN, "eth0", new_network(x, "bad"), "4095") == \
        ["VLAN_TAG_INVALID", "4095"]
    assert failure(x.pool.create_VLAN, "eth9", new_network(x, "none"), "7") == ["PIF_DEVICE_NOT_FOUND"]
    assert len(x.PIF.get_all()) == pifs
    # from a PIF: the VLAN goes on every live host's PIF of that PIF's network
    eth0 = [p for p, r in x.PIF.get_all_records().items() if r["device"] == "eth0" and r["physical"]][0]
    net2 = new_network(x, "vlan 43")
    [pif2] = x.pool.create_VLAN_from_PIF(eth0, net2, "43")
    assert x.PIF.get_VLAN(pif2) == "43" and x.PIF.get_network(pif2) == net2


def test_management_reconfigure(fresh):
    x = fresh
    host = the_host(x)
    old = x.host.get_management_interface(host)
    empty = new_network(x, "no pif")
    assert failure(x.pool.management_reconfigure, empty) == ["PIF_NOT_PRESENT", host, empty]
    vnet = new_network(x, "vlan mgmt")
    [vpif] = x.pool.create_VLAN("eth0", vnet, "99")
    assert failure(x.pool.management_reconfigure, vnet) == ["PIF_HAS_NO_NETWORK_CONFIGURATION", vpif]
    assert x.host.get_management_interface(host) == old
    x.PIF.reconfigure_ip(vpif, "Static", "10.9.9.9", "255.255.255.0", "", "")
    x.pool.management_reconfigure(vnet)
    assert x.PIF.get_management(vpif) is True and x.PIF.get_management(old) is False


# ---- membership ---------------------------------------------------------------------------

def test_membership_calls_of_a_lone_master(server, xapi):
    x = xapi
    host = the_host(x)
    # joining itself: the login works, then the master it reaches is itself
    assert failure(x.pool.join, "127.0.0.1", "root", server_password()) == \
        ["OPERATION_NOT_ALLOWED", "Host cannot become slave of itself"]
    assert failure(x.pool.join_force, "localhost", "root", server_password()) == \
        ["OPERATION_NOT_ALLOWED", "Host cannot become slave of itself"]
    assert failure(x.pool.join, "127.0.0.1", "root", "wrong")[0] == "SESSION_AUTHENTICATION_FAILED"
    # nobody answers there (TEST-NET-1 is never routed; .invalid never resolves)
    assert failure(x.pool.join, "192.0.2.1", "root", "x") == ["JOINING_HOST_CONNECTION_FAILED"]
    assert failure(x.pool.join, "no-such-host.invalid", "root", "x") == ["JOINING_HOST_CONNECTION_FAILED"]
    assert failure(x.pool.eject, host) == ["INTERNAL_ERROR", "Xapi_pool.Cannot_eject_master"]
    assert failure(x.pool.emergency_reset_master, "no-such-host.invalid") == \
        ["INTERNAL_ERROR", "Couldn't resolve hostname: no-such-host.invalid"]
    assert x.host.get_all() == [host] and x.pool.get_master(the_pool(x)) == host


def server_password():
    from tests.server import PASSWORD
    return PASSWORD


# ---- external auth, WLB, repositories -----------------------------------------------------

def test_external_auth(xapi):
    x = xapi
    pool, host = the_pool(x), the_host(x)
    assert failure(x.pool.enable_external_auth, pool, {}, "corp.example", "LDAP") == \
        ["AUTH_UNKNOWN_TYPE", "LDAP"]
    assert failure(x.pool.enable_external_auth, pool, {}, "corp.example", "") == ["AUTH_UNKNOWN_TYPE", ""]
    # the host's AUTH_ENABLE_FAILED_* comes back as the pool's, naming the host
    got = failure(x.pool.enable_external_auth, pool, {"user": "a", "pass": "b"}, "corp.example", "AD")
    assert got[0].startswith("POOL_AUTH_ENABLE_FAILED") and got[1] == host and len(got) == 3
    assert x.host.get_external_auth_type(host) == ""
    x.pool.disable_external_auth(pool, {})  # nothing enabled: done already
    assert x.host.get_external_auth_type(host) == ""
    assert failure(x.pool.external_auth_set_ldaps, pool, True, False) == ["AUTH_IS_DISABLED"]


def test_wlb_not_configured(xapi):
    x = xapi
    assert failure(x.pool.deconfigure_wlb) == ["WLB_NOT_INITIALIZED"]
    assert failure(x.pool.send_wlb_configuration, {"a": "b"}) == ["WLB_NOT_INITIALIZED"]
    assert failure(x.pool.retrieve_wlb_configuration) == ["WLB_NOT_INITIALIZED"]
    assert failure(x.pool.retrieve_wlb_recommendations) == ["WLB_NOT_INITIALIZED"]
    assert failure(x.pool.initialize_wlb, "", "u", "p", "root", "p") == ["WLB_URL_INVALID", ""]
    assert failure(x.pool.initialize_wlb, "wlb.invalid:8012", "u", "p", "root", "p") == ["WLB_UNKNOWN_HOST"]
    assert failure(x.pool.initialize_wlb, "127.0.0.1:1", "u", "p", "root", "p") == ["WLB_CONNECTION_REFUSED"]
    assert x.pool.get_wlb_url(the_pool(x)) == ""


def _repo(x, name, update):
    return x.Repository.introduce(name, "", "https://repo.example/" + name, "", update, "")


def test_repositories_and_proxy(fresh):
    x = fresh
    pool = the_pool(x)
    assert failure(x.pool.sync_updates, pool, False, "", "", "", "") == ["NO_REPOSITORIES_CONFIGURED"]
    base, upd, upd2 = _repo(x, "base", False), _repo(x, "updates", True), _repo(x, "more", True)
    x.pool.add_repository(pool, base)
    x.pool.add_repository(pool, upd)
    x.pool.add_repository(pool, upd)  # already there: nothing to do
    assert x.pool.get_repositories(pool) == [base, upd]
    assert failure(x.pool.add_repository, pool, upd2) == ["MULTIPLE_UPDATE_REPOSITORIES_ENABLED"]
    assert x.pool.get_repositories(pool) == [base, upd]
    x.pool.remove_repository(pool, upd)
    x.pool.remove_repository(pool, base)
    assert x.pool.get_repositories(pool) == []
    assert x.pool.check_update_readiness(pool, True) == []
    # the proxy: an http(s) URL, and a username only with a password
    assert failure(x.pool.configure_repository_proxy, pool, "ftp://p", "", "") == \
        ["INVALID_REPOSITORY_PROXY_URL", "ftp://p"]
    assert failure(x.pool.configure_repository_proxy, pool, "http://proxy:3128", "u", "") == \
        ["INVALID_REPOSITORY_PROXY_CREDENTIAL"]
    assert x.pool.get_repository_proxy_url(pool) == ""
    x.pool.configure_repository_proxy(pool, "http://proxy:3128", "u", "pw")
    rec = x.pool.get_record(pool)
    assert rec["repository_proxy_url"] == "http://proxy:3128" and rec["repository_proxy_username"] == "u"
    secret = rec["repository_proxy_password"]
    assert x.secret.get_value(secret) == "pw"
    x.pool.disable_repository_proxy(pool)
    rec = x.pool.get_record(pool)
    assert rec["repository_proxy_url"] == "" and rec["repository_proxy_password"] == NULL
    assert secret not in x.secret.get_all()


def test_repository_introduce_and_forget(fresh):
    x = fresh
    pool = the_pool(x)
    repo = _repo(x, "main", True)
    rec = x.Repository.get_record(repo)
    assert rec["binary_url"] == "https://repo.example/main" and rec["update"] is True
    assert rec["origin"] == "remote"
    count = len(x.Repository.get_all())
    assert failure(x.Repository.introduce, "main", "", "https://elsewhere/", "", False, "") == \
        ["REPOSITORY_ALREADY_EXISTS", repo]
    assert failure(x.Repository.introduce, "ftp", "", "ftp://repo/", "", False, "") == \
        ["INVALID_BASE_URL", "ftp://repo/"]
    assert failure(x.Repository.introduce, "k", "", "https://k/", "", False, "../key") == \
        ["INVALID_GPGKEY_PATH", "../key"]
    assert len(x.Repository.get_all()) == count
    x.pool.add_repository(pool, repo)
    assert failure(x.Repository.forget, repo) == ["REPOSITORY_IS_IN_USE"]
    x.pool.remove_repository(pool, repo)
    x.Repository.forget(repo)
    assert repo not in x.Repository.get_all()


def test_secureboot_readiness_and_failover_plan_with_a_protected_vm(fresh):
    x = fresh
    pool = the_pool(x)
    assert x.pool.get_guest_secureboot_readiness(pool) == "not_ready"
    x.pool.set_custom_uefi_certificates(pool, "H4sIAAAAAAAAA+3BMQEAAADCoPVPbQ0PoAAAAAAAAAAAAH4DmJmGXQAoAAA=")
    assert x.pool.get_guest_secureboot_readiness(pool) == "ready"
    # a protected VM on a network no host has a PIF for cannot be restarted elsewhere
    [template] = x.VM.get_by_name_label("Debian Bookworm 12")
    rec = x.VM.get_record(template)
    rec.update(name_label="protected", is_a_template=False, is_default_template=False,
               other_config={})
    vm = x.VM.create(rec)
    net = new_network(x, "private")
    x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                  "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert x.pool.ha_failover_plan_exists("0") is True  # nothing protected yet
    x.VM.set_ha_restart_priority(vm, "restart")
    assert x.pool.ha_failover_plan_exists("0") is False
    plan = x.pool.ha_compute_vm_failover_plan([the_host(x)], [vm])
    assert plan == {vm: {"error_code": "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED"}}
