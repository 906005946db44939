"""Issue 7: RBAC, sessions, failed logins, the audit log and TLS, against a real server."""
import hashlib
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import xmlrpc.client

import pytest

from pyxapi import model as _model
from tests.server import PASSWORD, RunningServer

MODEL = _model.load()
USERS = {"alice": "read-only", "bob": "vm-operator", "carol": "vm-admin", "dave": "pool-operator",
         "erin": "vm-operator"}
ORDER = ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only",
         "client-cert")


def cli(state_dir, *args):
    return subprocess.run([sys.executable, "-m", "pyxapi.cli", *args, "--state-dir", str(state_dir)],
                          capture_output=True, text=True, timeout=60)


def add_user(state_dir, name, role, password=None):
    got = cli(state_dir, "user", "add", name, "--role", role, "--password", password or name + "-pw")
    assert got.returncode == 0, got.stderr


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    state = tmp_path_factory.mktemp("security")
    for name, role in USERS.items():
        add_user(state, name, role)
    s = RunningServer(state, env={"PYXAPI_SESSION_REVALIDATE": "0.3"})
    yield s
    s.stop()


class Api:
    """A raw XML-RPC proxy bound to one session: calls return the whole Status struct."""

    def __init__(self, url, user="root", password=PASSWORD, originator="sec-tests"):
        self.proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
        got = self.proxy.session.login_with_password(user, password, "1.0", originator)
        assert got["Status"] == "Success", got
        self.ref = got["Value"]

    def __call__(self, method, *args):
        fn = self.proxy
        for part in method.split("."):
            fn = getattr(fn, part)
        return fn(self.ref, *args)

    def ok(self, method, *args):
        got = self(method, *args)
        assert got["Status"] == "Success", (method, got)
        return got["Value"]


def denial(method):
    cls, _, name = method.partition(".")
    roles = MODEL.classes[cls].messages[name].roles
    listed = ", ".join(r for r in ORDER if r in roles)
    return {"Status": "Failure", "ErrorDescription": [
        "RBAC_PERMISSION_DENIED", method.lower(),
        f"No permission in user session. (Roles with this permission: {listed})"]}


def login(srv, user, password=None, originator="sec-tests"):
    return Api(srv.http, user, password or (PASSWORD if user == "root" else user + "-pw"), originator)


@pytest.fixture(scope="module")
def root(srv):
    return login(srv, "root")


@pytest.fixture(scope="module")
def vm(root):
    return root.ok("VM.create", {"name_label": "sec-vm", "memory_static_max": str(2**30),
                                 "memory_dynamic_max": str(2**30), "memory_dynamic_min": str(2**30),
                                 "memory_static_min": str(2**30), "VCPUs_max": "1",
                                 "VCPUs_at_startup": "1", "other_config": {}})


# ---- roles and subjects ----------------------------------------------------------------------

def test_role_objects_as_xapi_has_them(root):
    roles = {root.ok("role.get_name_label", r): r for r in root.ok("role.get_all")}
    for name in ORDER:
        assert name in roles
        rec = root.ok("role.get_record", roles[name])
        assert rec["subroles"] and rec["is_internal"] is (name == "client-cert")
    # permissions are roles too: the call's name in lower case, with no subroles
    [perm] = root.ok("role.get_by_name_label", "vm.start")
    assert root.ok("role.get_subroles", perm) == []
    assert root.ok("role.get_by_uuid", root.ok("role.get_uuid", perm)) == perm
    assert root.ok("role.get_by_permission", perm) == [
        roles[r] for r in ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator")]
    assert root.ok("role.get_by_permission_name_label", "vm.destroy") == [
        roles[r] for r in ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin")]
    read_only = set(root.ok("role.get_permissions_name_label", roles["read-only"]))
    assert "vm.get_record" in read_only and "vm.start" not in read_only
    admin = root.ok("role.get_permissions", roles["pool-admin"])
    assert len(admin) > 1500 and perm in admin
    # the permissions of each role are exactly the model's messages granting it
    expected = {f"{c.name}.{m.name}".lower() for c in MODEL.classes.values()
                for m in c.messages.values() if "vm-operator" in m.roles}
    got = set(root.ok("role.get_permissions_name_label", roles["vm-operator"]))
    assert expected <= got and got - expected <= {"task.destroy/any"}


def test_roles_are_static(root):
    roles = root.ok("role.get_all")
    assert root("role.create", {})["ErrorDescription"][0] == "MESSAGE_METHOD_UNKNOWN"
    assert root("role.set_name_label", roles[0], "x")["ErrorDescription"][0] == "MESSAGE_METHOD_UNKNOWN"


def test_local_users_are_subjects(root):
    subjects = root.ok("subject.get_all_records")
    by_name = {s["other_config"]["subject-name"]: s for s in subjects.values()}
    assert set(USERS) <= set(by_name)
    assert "root" not in by_name
    alice = by_name["alice"]
    assert alice["subject_identifier"] == "local:alice"
    assert [root.ok("role.get_name_label", r) for r in alice["roles"]] == ["read-only"]
    ref = next(r for r, s in subjects.items() if s is alice)
    assert "vm.get_record" in root.ok("subject.get_permissions_name_label", ref)
    assert root("subject.create", {"subject_identifier": "local:alice"}) == {
        "Status": "Failure", "ErrorDescription": ["SUBJECT_ALREADY_EXISTS"]}
    assert root("subject.create", {"subject_identifier": "local:nobody"}) == {
        "Status": "Failure", "ErrorDescription": ["SUBJECT_CANNOT_BE_RESOLVED"]}


def test_read_only_reads_but_cannot_write(srv, root, vm):
    alice = login(srv, "alice")
    assert vm in alice.ok("VM.get_all")
    assert alice.ok("VM.get_record", vm)["name_label"] == "sec-vm"
    assert alice.ok("pool.get_all_records")
    for method, args in (("VM.set_name_label", (vm, "hacked")), ("VM.destroy", (vm,)),
                         ("VM.add_to_other_config", (vm, "k", "v")), ("VM.start", (vm, False, False)),
                         ("pool.set_name_label", (root.ok("pool.get_all")[0], "x"))):
        assert alice(method, *args) == denial(method)
    assert root.ok("VM.get_name_label", vm) == "sec-vm"
    assert "k" not in root.ok("VM.get_other_config", vm)


def test_each_role_gets_what_the_model_allows(srv, root, vm):
    # VM.set_name_label: vm-admin and pool-operator may, vm-operator and read-only may not
    for user, allowed in (("carol", True), ("dave", True), ("bob", False), ("alice", False)):
        got = login(srv, user)("VM.set_name_label", vm, f"by-{user}")
        assert (got["Status"] == "Success") is allowed, (user, got)
        if not allowed:
            assert got == denial("VM.set_name_label")
    assert root.ok("VM.get_name_label", vm) == "by-dave"
    root.ok("VM.set_name_label", vm, "sec-vm")
    # pool-operator may not manage subjects (pool-admin only)
    dave = login(srv, "dave")
    subject = root.ok("subject.get_all")[0]
    role = root.ok("role.get_by_name_label", "pool-admin")[0]
    assert dave("subject.add_to_roles", subject, role) == denial("subject.add_to_roles")


def test_local_root_only_messages(srv):
    # messages with no roles in the model are for the local superuser only
    dave = login(srv, "dave")
    assert dave("session.change_password", "x", "y") == {"Status": "Failure", "ErrorDescription": [
        "RBAC_PERMISSION_DENIED", "session.change_password",
        "No permission in user session. (Roles with this permission: )"]}


def test_denial_over_jsonrpc(srv, vm):
    ref = srv.jsonrpc("session.login_with_password", ["alice", "alice-pw"])["result"]
    got = srv.jsonrpc("VM.set_name_label", [ref, vm, "x"])
    assert got["error"]["message"] == "RBAC_PERMISSION_DENIED"
    assert got["error"]["data"] == denial("VM.set_name_label")["ErrorDescription"][1:]


def test_session_fields(srv, root):
    rec = root.ok("session.get_record", root.ref)
    assert rec["is_local_superuser"] is True and rec["rbac_permissions"] == []
    assert rec["subject"] == "OpaqueRef:NULL" and rec["originator"] == "sec-tests"
    alice = login(srv, "alice", originator="XenCenter")
    rec = alice.ok("session.get_record", alice.ref)
    assert rec["is_local_superuser"] is False
    assert rec["auth_user_name"] == "alice" and rec["auth_user_sid"] == "local:alice"
    assert rec["originator"] == "XenCenter"
    assert root.ok("subject.get_subject_identifier", rec["subject"]) == "local:alice"
    perms = set(rec["rbac_permissions"])
    assert {"read-only", "vm.get_record", "session.logout"} <= perms and "vm.start" not in perms
    assert "local:alice" in root.ok("session.get_all_subject_identifiers")


def test_role_changes_take_effect_at_next_login(srv, root, vm):
    subject = next(r for r, s in root.ok("subject.get_all_records").items()
                   if s["subject_identifier"] == "local:alice")
    vm_admin = root.ok("role.get_by_name_label", "vm-admin")[0]
    permission = root.ok("role.get_by_name_label", "vm.start")[0]
    before = login(srv, "alice")
    root.ok("subject.add_to_roles", subject, vm_admin)
    try:
        assert root("subject.add_to_roles", subject, vm_admin)["ErrorDescription"] == ["ROLE_ALREADY_EXISTS"]
        assert root("subject.add_to_roles", subject, permission)["ErrorDescription"] == ["ROLE_NOT_FOUND"]
        assert before("VM.set_name_label", vm, "x") == denial("VM.set_name_label")  # as xapi: next login
        after = login(srv, "alice")
        assert after.ok("VM.set_name_label", vm, "by-alice") == ""
    finally:
        root.ok("subject.remove_from_roles", subject, vm_admin)
        root.ok("VM.set_name_label", vm, "sec-vm")
    assert root("subject.remove_from_roles", subject, vm_admin)["ErrorDescription"] == ["ROLE_NOT_FOUND"]
    assert login(srv, "alice")("VM.set_name_label", vm, "x") == denial("VM.set_name_label")


def test_subject_without_roles_cannot_log_in_and_destroy_ends_sessions(srv, root):
    subject = next(r for r, s in root.ok("subject.get_all_records").items()
                   if s["subject_identifier"] == "local:bob")
    role = root.ok("subject.get_roles", subject)[0]
    session = login(srv, "bob")
    root.ok("subject.remove_from_roles", subject, role)
    proxy = xmlrpc.client.ServerProxy(srv.http)
    got = proxy.session.login_with_password("bob", "bob-pw")
    assert got["ErrorDescription"] == ["RBAC_PERMISSION_DENIED", "session.login_with_password",
                                       "Subject bob (identifier local:bob) has no roles in this pool"]
    root.ok("subject.destroy", subject)
    assert session("VM.get_all") == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", session.ref]}
    # the local user is still in the directory: a new login makes its subject again
    again = login(srv, "bob")
    assert again.ok("session.get_subject", again.ref) != subject


# ---- passwords ---------------------------------------------------------------------------

def test_user_passwd_ends_sessions_opened_with_the_old_password(srv):
    old = login(srv, "erin")
    assert old.ok("pool.get_all")
    assert cli(srv.state_dir, "user", "passwd", "erin", "--password", "erin-new").returncode == 0
    deadline = time.monotonic() + 10
    while old("pool.get_all")["Status"] == "Success" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert old("pool.get_all") == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", old.ref]}
    assert login(srv, "erin", "erin-new").ok("pool.get_all")
    bad = xmlrpc.client.ServerProxy(srv.http).session.login_with_password("erin", "erin-pw")
    assert bad["ErrorDescription"][0] == "SESSION_AUTHENTICATION_FAILED"


def test_change_password_keeps_own_session_and_ends_the_others(fresh_server):
    srv = fresh_server(https=False, unix=False)
    me, other = login(srv, "root"), login(srv, "root", originator="other")
    assert me.ok("session.change_password", "ignored as xapi does", "n3w-pw") == ""
    assert me.ok("pool.get_all")
    assert other("pool.get_all") == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", other.ref]}
    assert login(srv, "root", "n3w-pw").ok("pool.get_all")
    bad = xmlrpc.client.ServerProxy(srv.http).session.login_with_password("root", PASSWORD)
    assert bad["ErrorDescription"][0] == "SESSION_AUTHENTICATION_FAILED"
    assert me("session.change_password", "", "")["ErrorDescription"][0] == "CHANGE_PASSWORD_REJECTED"


def test_failed_logins_are_logged_and_slowed_without_blocking_others(srv, root):
    proxy = xmlrpc.client.ServerProxy(srv.http)
    took = []
    for _ in range(4):
        t = time.monotonic()
        got = proxy.session.login_with_password("ghost", "guess")
        took.append(time.monotonic() - t)
        assert got["ErrorDescription"] == ["SESSION_AUTHENTICATION_FAILED", "ghost", "Authentication failure"]
    # each failure doubles the wait: 0.2, 0.4, 0.8, 1.6 s at least
    for n, t in enumerate(took):
        assert t >= 0.2 * 2 ** n * 0.95, took
    # while the fifth guess is held back, other clients are served
    done = threading.Event()
    threading.Thread(target=lambda: (xmlrpc.client.ServerProxy(srv.http)
                                     .session.login_with_password("ghost", "guess"), done.set())).start()
    time.sleep(0.3)
    assert root.ok("pool.get_all") and not done.is_set()
    assert done.wait(10)
    assert "failed login for user 'ghost'" in srv.log_path.read_text()


def test_parallel_guesses_for_one_user_are_taken_one_at_a_time(srv):
    def guess():
        xmlrpc.client.ServerProxy(srv.http).session.login_with_password("ghost2", "guess")

    t = time.monotonic()
    threads = [threading.Thread(target=guess) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert time.monotonic() - t >= (0.2 + 0.4 + 0.8) * 0.95


# ---- session expiry and caps -------------------------------------------------------------

def test_idle_sessions_expire(fresh_server):
    srv = fresh_server(extra_args=["--session-timeout", "2"], https=False, unix=False)
    idle, busy = login(srv, "root"), login(srv, "root")
    for _ in range(5):  # used every 0.6 s: stays alive past the timeout
        assert busy.ok("pool.get_all")
        time.sleep(0.6)
    assert idle("pool.get_all") == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", idle.ref]}
    assert busy.ok("pool.get_all")


def test_sessions_per_originator_and_user_are_capped_oldest_first(fresh_server):
    srv = fresh_server(extra_args=["--max-sessions", "3"], https=False, unix=False)
    add_user(srv.state_dir, "frank", "read-only")
    a = [login(srv, "root", originator="A") for _ in range(3)]
    a[0].ok("pool.get_all")  # a[1] is now the least recently used
    b = login(srv, "root", originator="B")
    a.append(login(srv, "root", originator="A"))
    assert a[1]("pool.get_all")["ErrorDescription"] == ["SESSION_INVALID", a[1].ref]
    for s in (a[0], a[2], a[3], b):
        assert s.ok("pool.get_all")
    f = [login(srv, "frank", originator=f"o{i}") for i in range(4)]  # users are grouped by name
    assert f[0]("pool.get_all")["ErrorDescription"][0] == "SESSION_INVALID"
    assert all(s.ok("pool.get_all") for s in f[1:])


def test_a_session_with_a_pending_task_outlives_the_cap(fresh_server):
    srv = fresh_server(extra_args=["--max-sessions", "2"], https=False, unix=False)
    busy = login(srv, "root", originator="C")
    task = busy.ok("task.create", "still running", "")
    idle = login(srv, "root", originator="C")
    login(srv, "root", originator="C")  # a third in a group of two: the oldest without a pending task goes
    assert idle("pool.get_all")["ErrorDescription"] == ["SESSION_INVALID", idle.ref]
    assert busy.ok("session.get_tasks", busy.ref) == [task]


def test_logout_ends_only_that_session(srv):
    s1, s2 = login(srv, "carol"), login(srv, "carol")
    assert s1.ok("session.logout") == ""
    assert s1("pool.get_all")["ErrorDescription"] == ["SESSION_INVALID", s1.ref]
    assert s2.ok("pool.get_all")


# ---- audit log ---------------------------------------------------------------------------

def audit_lines(srv):
    return [json.loads(line) for line in (srv.state_dir / "audit.log").read_text().splitlines()]


def test_audit_log_records_state_changes_with_who_what_when_outcome(srv, root, vm):
    before = len(audit_lines(srv))
    root.ok("VM.set_name_description", vm, "audited")
    root.ok("VM.get_record", vm)  # getters are not audited
    alice = login(srv, "alice", originator="auditor")
    alice("VM.set_name_description", vm, "nope")
    xmlrpc.client.ServerProxy(srv.http).session.login_with_password("alice", "wrong-secret-pw")
    lines = audit_lines(srv)[before:]
    calls = [(e["user"], e["call"], e["outcome"]) for e in lines]
    assert calls == [("root", "VM.set_name_description", "success"),
                     ("alice", "session.login_with_password", "success"),
                     ("alice", "VM.set_name_description", "failure"),
                     ("alice", "session.login_with_password", "failure")]
    ok, login_ok, denied, failed = lines
    assert ok["args"] == [vm, "audited"] and ok["originator"] == "sec-tests"
    assert ok["session"] == hashlib.sha256(root.ref.encode()).hexdigest()[:16]
    assert ok["time"].endswith("Z") and ok["time"][:4].isdigit()
    assert login_ok["args"][1] == "(hidden)"
    assert denied["error"] == denial("VM.set_name_description")["ErrorDescription"]
    assert denied["subject"] == "local:alice" and denied["originator"] == "auditor"
    assert failed["error"][0] == "SESSION_AUTHENTICATION_FAILED"
    text = (srv.state_dir / "audit.log").read_text()
    assert "wrong-secret-pw" not in text and PASSWORD not in text and "alice-pw" not in text
    assert root.ref not in text and alice.ref not in text  # session refs are secrets


def wait_done(api, task):
    deadline = time.monotonic() + 30
    while api.ok("task.get_status", task) == "pending":
        assert time.monotonic() < deadline, task
        time.sleep(0.05)


def test_async_calls_are_audited_with_the_outcome_of_their_task(srv, root, vm):
    before = len(audit_lines(srv))
    cloned = root.ok("Async.VM.clone", vm, "audited clone")
    wait_done(root, cloned)
    refused = root.ok("Async.VM.clean_shutdown", vm)  # accepted, fails in its task: the VM is halted
    wait_done(root, refused)
    assert root("Async.VM.clone", "OpaqueRef:NULL", "x")["ErrorDescription"][0] == "HANDLE_INVALID"
    lines = audit_lines(srv)[before:]
    assert [(e["call"], e["outcome"], e.get("task")) for e in lines] == [
        ("Async.VM.clone", "success", cloned), ("Async.VM.clean_shutdown", "failure", refused),
        ("Async.VM.clone", "failure", None)]  # one line each, none saying "submitted"
    made = root.ok("task.get_result", cloned)
    assert lines[0]["result"] == made[len("<value>"):-len("</value>")] == root.ok("VM.get_by_name_label", "audited clone")[0]
    assert lines[0]["args"] == [vm, "audited clone"] and lines[0]["user"] == "root"
    assert lines[1]["error"] == ["VM_BAD_POWER_STATE", vm, "Running", "Halted"]
    assert lines[2]["error"] == ["HANDLE_INVALID", "VM", "OpaqueRef:NULL"]
    assert lines[0]["time"] <= lines[1]["time"] <= lines[2]["time"]


# ---- TLS ---------------------------------------------------------------------------------

def _host_port(url):
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    return host, int(port)


def _handshake(srv, **settings):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers(settings.pop("ciphers", "ALL:@SECLEVEL=0"))
    for k, v in settings.items():
        setattr(ctx, k, v)
    with socket.create_connection(_host_port(srv.https), timeout=10) as sock:
        with ctx.wrap_socket(sock) as tls:
            return tls.version(), tls.cipher()[0], tls.getpeercert(binary_form=True)


def test_tls_fingerprint_in_banner_matches_served_certificate(srv):
    _, _, der = _handshake(srv)
    digest = hashlib.sha256(der).hexdigest().upper()
    shown = ":".join(digest[i:i + 2] for i in range(0, 64, 2))
    assert f"TLS certificate SHA-256 fingerprint: {shown}\n" in srv.banner


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # naming TLS 1.0/1.1 to try them
def test_tls_modern_only(srv):
    version, cipher, _ = _handshake(srv)
    assert version == "TLSv1.3"
    version, cipher, _ = _handshake(srv, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2" and "ECDHE" in cipher and ("GCM" in cipher or "CHACHA20" in cipher)
    for settings in ({"minimum_version": ssl.TLSVersion.TLSv1, "maximum_version": ssl.TLSVersion.TLSv1_1},
                     {"maximum_version": ssl.TLSVersion.TLSv1_2, "ciphers": "ECDHE+AES+SHA1:AES128-SHA:@SECLEVEL=0"},
                     {"maximum_version": ssl.TLSVersion.TLSv1_2, "ciphers": "AES128-GCM-SHA256:@SECLEVEL=0"}):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(srv, **settings)


def test_sessions_end_with_a_restart(fresh_server):
    """xapi does not persist sessions: after a restart (clean or kill -9) every old session ref is
    SESSION_INVALID, its record gone; a new login gets its rights afresh."""
    srv = fresh_server(https=False, unix=False)
    add_user(srv.state_dir, "grace", "read-only")
    root, grace = login(srv, "root"), login(srv, "grace")
    vm = root.ok("VM.get_all")[0]
    for stop in (srv.kill, srv.stop):
        old = (root.ref, grace.ref)
        stop()
        srv = fresh_server(https=False, unix=False)
        for api in (root, grace):
            api.proxy = xmlrpc.client.ServerProxy(srv.http, allow_none=True)
            assert api("pool.get_all") == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", api.ref]}
        root, grace = login(srv, "root"), login(srv, "grace")
        for ref in old:
            assert root("session.get_record", ref)["ErrorDescription"] == ["HANDLE_INVALID", "session", ref]
        assert grace.ok("VM.get_record", vm)
        assert grace("VM.set_name_label", vm, "x") == denial("VM.set_name_label")
        assert root.ok("session.get_rbac_permissions", grace.ref) == \
            root.ok("subject.get_permissions_name_label", root.ok("session.get_subject", grace.ref))


def test_role_calls_with_a_null_ref_are_handle_invalid(server):
    for method in ("role.get_by_permission", "role.get_permissions", "role.get_permissions_name_label"):
        got = server.jsonrpc("session.login_with_password", ["root", PASSWORD])["result"]
        err = server.jsonrpc(method, [got, "OpaqueRef:NULL"])["error"]
        assert err["message"] == "HANDLE_INVALID" and err["data"] == ["role", "OpaqueRef:NULL"], method
