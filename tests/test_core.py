"""Issue 2: the wire protocol, transports, sessions and the model-driven object server,
driven through the official client (XenAPI.py) and plain JSON-RPC against a real server."""
import xmlrpc.client

import pytest

from pyxapi import model as _model
from tests.helpers import failure
from tests.server import PASSWORD

MODEL = _model.load()


@pytest.fixture(scope="module")
def raw(server):
    """A bare xmlrpc.client proxy (no XenAPI.py re-login magic) and a session ref."""
    proxy = xmlrpc.client.ServerProxy(server.http, allow_none=True)
    ref = proxy.session.login_with_password("root", PASSWORD)["Value"]
    return proxy, ref


# ---- transports and sessions ---------------------------------------------------

@pytest.mark.parametrize("transport", ["http", "https", "unix"])
def test_login_and_call_over_each_transport(server, transport):
    session = server.session(transport)
    x = session.xenapi
    pools = x.pool.get_all()
    assert len(pools) == 1
    master = x.pool.get_master(pools[0])
    assert x.host.get_record(master)["uuid"] == x.host.get_uuid(master)
    assert session.API_version == "2.21"
    x.session.logout()


def test_login_with_two_three_and_four_params(raw, server):
    proxy, _ = raw
    for params in (("root", PASSWORD), ("root", PASSWORD, "1.0"), ("root", PASSWORD, "1.0", "me")):
        result = proxy.session.login_with_password(*params)
        assert result["Status"] == "Success"
        assert result["Value"].startswith("OpaqueRef:")


def test_session_record_fields(raw):
    proxy, ref = raw
    rec = proxy.session.get_record(ref, ref)["Value"]
    assert rec["auth_user_name"] == "root"
    assert rec["is_local_superuser"] is True
    host = proxy.session.get_this_host(ref, ref)["Value"]
    assert proxy.host.get_uuid(ref, host)["Status"] == "Success"
    assert rec["this_host"] == host


def test_wrong_password_and_logout(raw, server):
    proxy, _ = raw
    bad = proxy.session.login_with_password("root", "nope")
    assert bad == {"Status": "Failure",
                   "ErrorDescription": ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]}
    ref = proxy.session.login_with_password("root", PASSWORD)["Value"]
    assert proxy.session.logout(ref) == {"Status": "Success", "Value": ""}
    assert proxy.pool.get_all(ref) == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}


def test_session_refs_are_unguessable(raw):
    proxy, _ = raw
    refs = {proxy.session.login_with_password("root", PASSWORD)["Value"] for _ in range(5)}
    assert len(refs) == 5
    for r in refs:
        assert len(r) >= len("OpaqueRef:") + 36


# ---- the spec's own examples ---------------------------------------------------

SPEC_LOGIN = b"""<?xml version='1.0'?>
<methodCall>
<methodName>session.login_with_password</methodName>
<params>
<param>
<value><string>root</string></value>
</param>
<param>
<value><string>%s</string></value>
</param>
</params>
</methodCall>
"""


def test_spec_literal_login_body(server):
    resp = server.xmlrpc_raw(SPEC_LOGIN % PASSWORD.encode())
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/xml")
    (value,), _ = xmlrpc.client.loads(resp.content)
    assert value["Status"] == "Success" and value["Value"].startswith("OpaqueRef:")


def test_spec_example_failure_shape_for_start_of_running_vm(raw):
    proxy, ref = raw
    dom0 = proxy.VM.get_all_records_where(ref, 'field "is_control_domain" = "true"')["Value"]
    (vm,) = dom0
    result = proxy.VM.start(ref, vm, False, False)
    assert result["Status"] == "Failure"
    assert set(result) == {"Status", "ErrorDescription"}
    assert result["ErrorDescription"][0] in ("VM_BAD_POWER_STATE", "OPERATION_NOT_ALLOWED",
                                             "NOT_IMPLEMENTED")


def test_ints_are_decimal_strings_and_maps_are_structs(server, raw):
    proxy, ref = raw
    host = proxy.host.get_all(ref)["Value"][0]
    body = xmlrpc.client.dumps((ref, host), "host.get_API_version_major").encode()
    text = server.xmlrpc_raw(body).text
    assert "<value>2</value>" in text  # an int travels as a decimal string
    body = xmlrpc.client.dumps((ref, host), "host.get_software_version").encode()
    text = server.xmlrpc_raw(body).text
    assert "<struct>" in text and "<name>product_version</name>" in text
    body = xmlrpc.client.dumps((ref,), "host.get_all").encode()
    assert "<array><data>" in server.xmlrpc_raw(body).text


def test_void_is_empty_string(xapi):
    pool = xapi.pool.get_all()[0]
    assert xapi.pool.set_name_description(pool, "described") == ""


def test_malformed_bodies_get_clear_errors_and_server_survives(server, xapi):
    for body in (b"", b"<methodCall>", b"garbage\xff\xfe", b"<!DOCTYPE x [<!ENTITY a 'b'>]><methodCall/>"):
        resp = server.xmlrpc_raw(body)
        assert resp.status_code == 200
        with pytest.raises(xmlrpc.client.Fault) as exc:
            xmlrpc.client.loads(resp.content)
        assert exc.value.faultString  # says what is wrong
    assert xapi.pool.get_all()


# ---- dispatch and errors -------------------------------------------------------

def test_unknown_method(raw):
    proxy, ref = raw
    assert proxy.VM.frobnicate(ref)["ErrorDescription"] == ["MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"]
    assert proxy.Nope.get_all(ref)["ErrorDescription"] == ["MESSAGE_METHOD_UNKNOWN", "Nope.get_all"]


def test_parameter_count_mismatch(raw):
    proxy, ref = raw
    assert proxy.VM.get_name_label(ref)["ErrorDescription"] == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_name_label", "2", "1"]


def test_field_type_error(raw):
    proxy, ref = raw
    pool = proxy.pool.get_all(ref)["Value"][0]
    assert proxy.pool.set_name_label(ref, pool, 42)["ErrorDescription"] == ["FIELD_TYPE_ERROR", "value"]
    assert proxy.pool.set_ha_allow_overcommit(ref, pool, ["x"])["ErrorDescription"] == [
        "FIELD_TYPE_ERROR", "value"]


def test_invalid_enum_value(raw):
    proxy, ref = raw
    vms = proxy.VM.get_all(ref)["Value"]
    got = proxy.VM.set_actions_after_crash(ref, vms[0], "explode")["ErrorDescription"]
    assert got[0] == "INVALID_VALUE" and "explode" in got


def test_handle_and_uuid_invalid(raw):
    proxy, ref = raw
    assert proxy.VM.get_record(ref, "OpaqueRef:nope")["ErrorDescription"] == [
        "HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    assert proxy.VM.get_by_uuid(ref, "00000000-0000-0000-0000-000000000000")["ErrorDescription"] == [
        "UUID_INVALID", "VM", "00000000-0000-0000-0000-000000000000"]


def test_map_add_duplicate_and_remove(xapi):
    pool = xapi.pool.get_all()[0]
    uuid = xapi.pool.get_uuid(pool)
    xapi.pool.add_to_other_config(pool, "k1", "v1")
    assert failure(xapi.pool.add_to_other_config, pool, "k1", "v2") == [
        "MAP_DUPLICATE_KEY", "pool", "other_config", uuid, "k1"]
    assert xapi.pool.get_other_config(pool)["k1"] == "v1"  # state unchanged by the failure
    xapi.pool.remove_from_other_config(pool, "k1")
    assert "k1" not in xapi.pool.get_other_config(pool)
    xapi.pool.remove_from_other_config(pool, "k1")  # absent key: no error, as xapi


def test_set_add_remove(xapi):
    pool = xapi.pool.get_all()[0]
    xapi.pool.add_tags(pool, "blue")
    xapi.pool.add_tags(pool, "blue")
    assert xapi.pool.get_tags(pool).count("blue") == 1
    xapi.pool.remove_tags(pool, "blue")
    assert "blue" not in xapi.pool.get_tags(pool)


def test_unimplemented_message_answers_not_implemented(raw):
    proxy, ref = raw
    pool = proxy.pool.get_all(ref)["Value"][0]
    # a message no module implements (a one-host pool cannot send intra-pool test posts)
    got = proxy.pool.send_test_post(ref, "192.0.2.1", "443", "")
    assert got["ErrorDescription"] == ["NOT_IMPLEMENTED", "pool.send_test_post"]
    assert pool


def test_get_all_records_where(xapi):
    got = xapi.VM.get_all_records_where('field "is_control_domain" = "true"')
    assert len(got) == 1 and list(got.values())[0]["is_control_domain"] is True
    none = xapi.VM.get_all_records_where('field "is_control_domain" = "true" and not (field "power_state" = "Running")')
    assert none == {}
    either = xapi.VM.get_all_records_where('field "name__label" = "nope" or field "domid" = "0"')
    assert set(either) == set(got)
    assert failure(xapi.VM.get_all_records_where, 'field "x" ===')[0] == "INTERNAL_ERROR"


def test_get_by_name_label(xapi):
    host = xapi.host.get_all()[0]
    label = xapi.host.get_name_label(host)
    assert xapi.host.get_by_name_label(label) == [host]
    assert xapi.host.get_by_name_label("no such host") == []


# ---- every class, from the model -----------------------------------------------

def sample_value(t, current):
    """A value of type t different from `current`, for setter round trips."""
    from pyxapi.model.types import Enum, Map, Prim, Set

    match t:
        case Prim("string"):
            return current + "-x"
        case Prim("int"):
            return str(int(current) + 7)  # ints travel as decimal strings
        case Prim("float"):
            return current + 1.5
        case Prim("bool"):
            return not current
        case Enum(_, values):
            others = sorted(v for v in values if v != current)
            return others[0] if others else current
        case Map(Prim("string"), Prim("string")):
            return {**current, "roundtrip": "yes"}
        case Set(Prim("string")):
            return [*current, "roundtrip"]
    return None


def test_every_class_answers_get_all_records_with_every_field(xapi):
    for cls in MODEL.classes.values():
        if "get_all_records" not in cls.messages or cls.messages["get_all_records"].state == "Removed_s":
            continue
        records = getattr(xapi, cls.name).get_all_records()
        assert isinstance(records, dict), cls.name
        for ref, rec in records.items():
            assert set(rec) == set(cls.fields), cls.name


def test_getters_agree_with_records_for_every_object(xapi):
    checked = 0
    for cls in MODEL.classes.values():
        if "get_all_records" not in cls.messages or cls.messages["get_all_records"].state == "Removed_s":
            continue
        proxy = getattr(xapi, cls.name)
        for ref, rec in proxy.get_all_records().items():
            for name in cls.fields:
                getter = cls.messages.get("get_" + name)
                if getter is None or getter.state == "Removed_s":
                    continue
                assert getattr(proxy, "get_" + name)(ref) == rec[name], (cls.name, name)
                checked += 1
    assert checked > 100


def test_setters_round_trip_on_every_object(xapi):
    done = 0
    for cls in MODEL.classes.values():
        if "get_all_records" not in cls.messages or cls.messages["get_all_records"].state == "Removed_s":
            continue
        proxy = getattr(xapi, cls.name)
        for ref, rec in proxy.get_all_records().items():
            if cls.name in ("session",):
                continue
            for name, f in cls.fields.items():
                setter = cls.messages.get("set_" + name)
                getter = cls.messages.get("get_" + name)
                if setter is None or not setter.implicit or "Removed_s" in (setter.state, getter.state):
                    continue
                if (cls.name, name) == ("VM", "is_a_template"):
                    continue  # xapi: only a halted VM, not a snapshot, becomes a template
                value = sample_value(f.type, rec[name])
                if value is None:
                    continue
                getattr(proxy, "set_" + name)(ref, value)
                assert getattr(proxy, "get_" + name)(ref) == value, (cls.name, name)
                getattr(proxy, "set_" + name)(ref, rec[name])
                done += 1
    assert done > 10


def test_read_only_fields_have_no_setter(raw):
    proxy, ref = raw
    host = proxy.host.get_all(ref)["Value"][0]
    got = proxy.host.set_API_version_major(ref, host, "3")
    assert got["ErrorDescription"] == ["MESSAGE_METHOD_UNKNOWN", "host.set_API_version_major"]


# ---- create/destroy and relations kept in step --------------------------------

def test_create_destroy_and_relations_both_ways(xapi):
    vm = xapi.VM.create({"name_label": "rel-test", "memory_static_max": "1073741824",
                         "memory_dynamic_max": "1073741824", "memory_dynamic_min": "1073741824",
                         "memory_static_min": "1073741824", "VCPUs_max": "1", "VCPUs_at_startup": "1"})
    rec = xapi.VM.get_record(vm)
    assert rec["name_label"] == "rel-test" and rec["power_state"] == "Halted"
    assert xapi.VM.get_by_uuid(rec["uuid"]) == vm
    vbd = xapi.VBD.create({"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3", "bootable": False,
                           "mode": "RO", "type": "CD", "empty": True, "other_config": {},
                           "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert xapi.VM.get_VBDs(vm) == [vbd]
    assert xapi.VBD.get_VM(vbd) == vm
    xapi.VBD.destroy(vbd)
    assert xapi.VM.get_VBDs(vm) == []
    xapi.VM.destroy(vm)
    assert failure(xapi.VM.get_record, vm) == ["HANDLE_INVALID", "VM", vm]


def test_create_with_dangling_ref_is_rejected(xapi):
    details = failure(xapi.VBD.create, {"VM": "OpaqueRef:missing", "VDI": "OpaqueRef:NULL",
                                        "userdevice": "0", "mode": "RO", "type": "CD", "empty": True})
    assert details == ["HANDLE_INVALID", "VM", "OpaqueRef:missing"]


def test_async_call_returns_a_task(xapi):
    task = xapi.Async.VM.create({"name_label": "async-made"})
    assert task.startswith("OpaqueRef:")
    import time

    for _ in range(100):
        if xapi.task.get_status(task) != "pending":
            break
        time.sleep(0.05)
    rec = xapi.task.get_record(task)
    assert rec["status"] == "success", rec
    assert rec["name_label"] == "Async.VM.create"
    new_vm = rec["result"].removeprefix("<value>").removesuffix("</value>")
    assert xapi.VM.get_name_label(new_vm) == "async-made"
    xapi.VM.destroy(new_vm)


def test_async_argument_errors_come_back_directly(raw):
    proxy, ref = raw
    got = proxy.Async.VM.destroy(ref, "OpaqueRef:nope")
    assert got["ErrorDescription"] == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    assert proxy.Async.VM.get_name_label(ref, "x")["ErrorDescription"][0] == "MESSAGE_METHOD_UNKNOWN"


# ---- JSON-RPC --------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_jsonrpc_login_call_and_error(server, version):
    login = server.jsonrpc("session.login_with_password", ["root", PASSWORD, "1.0", "t"], 7, version)
    assert login["id"] == 7
    session = login["result"]
    assert session.startswith("OpaqueRef:")
    hosts = server.jsonrpc("host.get_all_records", [session], 8, version)["result"]
    (rec,) = hosts.values()
    assert rec["API_version_major"] == 2  # ints are JSON numbers
    bad = server.jsonrpc("VM.get_record", [session, "OpaqueRef:x"], 9, version)
    assert bad["id"] == 9
    err = bad["error"]
    if version == "2.0":
        assert bad["jsonrpc"] == "2.0"
        assert err["message"] == "HANDLE_INVALID" and err["data"] == ["VM", "OpaqueRef:x"]
    else:  # xapi's JSON-RPC 1.0 error is the ErrorDescription itself
        assert err == ["HANDLE_INVALID", "VM", "OpaqueRef:x"]


def test_jsonrpc_malformed(server):
    import httpx

    r = httpx.post(server.http + "jsonrpc", content=b"{not json", timeout=10)
    assert r.status_code == 200
    assert "error" in r.json()


# ---- durability --------------------------------------------------------------------

def test_kill_9_keeps_every_acknowledged_write(fresh_server):
    srv = fresh_server()
    x = srv.session().xenapi
    made = {}
    for i in range(30):
        vm = x.VM.create({"name_label": f"durable-{i}"})
        made[vm] = x.VM.get_uuid(vm)
    pool = x.pool.get_all()[0]
    x.pool.set_name_label(pool, "after-writes")
    host_uuid = x.host.get_uuid(x.host.get_all()[0])
    srv.kill()  # SIGKILL: no chance to flush anything

    srv2 = fresh_server()
    y = srv2.session().xenapi
    for vm, uuid in made.items():
        assert y.VM.get_uuid(vm) == uuid  # same refs and UUIDs
        assert y.VM.get_by_uuid(uuid) == vm
    assert y.pool.get_name_label(pool) == "after-writes"
    assert y.host.get_uuid(y.host.get_all()[0]) == host_uuid
    assert len(y.pool.get_all()) == 1  # first-start skeleton not made twice
