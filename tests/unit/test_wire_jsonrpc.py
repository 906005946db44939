"""JSON-RPC codec: xapi's request/response shapes, errors, property tests."""

from __future__ import annotations

import datetime as dt
import json
import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxapi.wire import WireError as SharedWireError
from pyxapi.wire.jsonrpc import (
    CONTENT_TYPE,
    INVALID_REQUEST,
    PARSE_ERROR,
    WireError,
    encode_call,
    failure,
    parse_call,
    protocol_error,
    success,
)


def test_wire_error_shared():
    assert WireError is SharedWireError


def test_content_type_is_exact():
    # Xen Orchestra's xen-api compares the header with this exact string
    assert CONTENT_TYPE == "application/json"


# --------------------------------------------------------------------- requests


def test_parse_v1_request_from_xapi_docs():
    body = b"""{
        "method": "host.get_resident_VMs",
        "params": ["OpaqueRef:74f1a19cd-b660-41e3-a163-10f03e0eae67",
                   "OpaqueRef:08c34fc9-f418-4f09-8274-b9cb25cd8550"],
        "id": "xyz"
    }"""
    assert parse_call(body) == (
        "host.get_resident_VMs",
        ["OpaqueRef:74f1a19cd-b660-41e3-a163-10f03e0eae67", "OpaqueRef:08c34fc9-f418-4f09-8274-b9cb25cd8550"],
        "xyz",
        "1.0",
    )


def test_parse_v2_request_like_xen_orchestra():
    # json-rpc-protocol's format.request(0, method, args)
    body = b'{"jsonrpc":"2.0","method":"session.login_with_password","params":["root","pw"],"id":0}'
    assert parse_call(body) == ("session.login_with_password", ["root", "pw"], 0, "2.0")


def test_parse_params_absent_or_null():
    assert parse_call(b'{"jsonrpc":"2.0","method":"m","id":1}') == ("m", [], 1, "2.0")
    assert parse_call(b'{"method":"m","params":null,"id":1}') == ("m", [], 1, "1.0")


def test_parse_explicit_v1():
    assert parse_call(b'{"jsonrpc":"1.0","method":"m","params":[],"id":1}')[3] == "1.0"


def test_parse_values_types():
    body = b'{"jsonrpc":"2.0","method":"m","id":"a","params":["s",1,-9223372036854775808,1.5,true,null,[1],{"k":{"j":[]}}]}'
    _, params, _, _ = parse_call(body)
    assert params == ["s", 1, -(2**63), 1.5, True, None, [1], {"k": {"j": []}}]
    assert [type(x) for x in params[:6]] == [str, int, int, float, bool, type(None)]


def test_parse_bytes_like_and_str():
    body = b'{"method":"m","params":[],"id":1}'
    assert parse_call(bytearray(body))[0] == "m"
    assert parse_call(memoryview(body))[0] == "m"
    assert parse_call(body.decode())[0] == "m"


@pytest.mark.parametrize(
    "body, fragment, code, rid, version",
    [
        (b"", "empty", PARSE_ERROR, None, "2.0"),
        (b"{", "invalid JSON", PARSE_ERROR, None, "2.0"),
        (b'{"method": "m", "id": 1,}', "invalid JSON", PARSE_ERROR, None, "2.0"),
        (b'{"method":"m","params":[NaN],"id":1}', "invalid JSON", PARSE_ERROR, None, "2.0"),
        (b"\xff\xfe{}", "invalid JSON", PARSE_ERROR, None, "2.0"),
        (b'{"method":"\xed\xa0\x80","id":1}', "invalid JSON", PARSE_ERROR, None, "2.0"),
        (b"[" * 10_000 + b"]" * 10_000, "invalid JSON", PARSE_ERROR, None, "2.0"),
        (b"[]", "batch", INVALID_REQUEST, None, "2.0"),
        (b"42", "JSON object", INVALID_REQUEST, None, "2.0"),
        (b'"x"', "JSON object", INVALID_REQUEST, None, "2.0"),
        (b"null", "JSON object", INVALID_REQUEST, None, "2.0"),
        (b'{"jsonrpc":"2.0","params":[],"id":7}', "method", INVALID_REQUEST, 7, "2.0"),
        (b'{"params":[],"id":"q"}', "method", INVALID_REQUEST, "q", "1.0"),
        (b'{"jsonrpc":"2.0","method":"","id":7}', "method", INVALID_REQUEST, 7, "2.0"),
        (b'{"jsonrpc":"2.0","method":5,"id":7}', "method", INVALID_REQUEST, 7, "2.0"),
        (b'{"jsonrpc":"2.0","method":"m","params":{"a":1},"id":7}', "JSON array", INVALID_REQUEST, 7, "2.0"),
        (b'{"method":"m","params":"x","id":7}', "JSON array", INVALID_REQUEST, 7, "1.0"),
        (b'{"jsonrpc":"3.0","method":"m","id":7}', "jsonrpc", INVALID_REQUEST, 7, "2.0"),
        (b'{"jsonrpc":2.0,"method":"m","id":7}', "jsonrpc", INVALID_REQUEST, 7, "2.0"),
        (b'{"jsonrpc":"2.0","method":"m","params":[]}', "notifications", INVALID_REQUEST, None, "2.0"),
        (b'{"method":"m","params":[],"id":null}', "notifications", INVALID_REQUEST, None, "1.0"),
        (b'{"method":"m","params":[],"id":[1]}', "'id'", INVALID_REQUEST, None, "2.0"),
        (b'{"method":"m","params":[],"id":true}', "'id'", INVALID_REQUEST, None, "2.0"),
        (b'{"method":"m","params":[],"id":1.5}', "'id'", INVALID_REQUEST, None, "2.0"),
    ],
)
def test_bad_requests(body, fragment, code, rid, version):
    with pytest.raises(WireError) as info:
        parse_call(body)
    e = info.value
    assert type(e) is WireError
    assert fragment in str(e)
    assert (e.code, e.id, e.version) == (code, rid, version)
    # and the error reply built from it is valid JSON echoing the id
    reply = orjson.loads(protocol_error(str(e), e.id, e.version, e.code))
    assert reply["id"] == rid and reply["error"]["code"] == code


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_bytes_only_wire_error(data):
    try:
        method, params, rid, version = parse_call(data)
    except WireError:
        return
    assert type(method) is str and type(params) is list and version in ("1.0", "2.0")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=15,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["jsonrpc", "method", "params", "id", "x"]), _json_values, max_size=5))
def test_fuzz_json_objects_only_wire_error(obj):
    try:
        body = json.dumps(obj).encode()
    except ValueError:
        return
    try:
        method, params, rid, version = parse_call(body)
    except WireError:
        return
    assert type(method) is str and type(params) is list and type(rid) in (str, int)


# --------------------------------------------------------------------- responses


def test_success_shapes_match_xapi():
    refs = ["OpaqueRef:604f51e7-630f-4412-83fa-b11c6cf008ab", "OpaqueRef:670d08f5-cbeb-4336-8420-ccd56390a65f"]
    assert orjson.loads(success(refs, "xyz", "1.0")) == {"result": refs, "error": None, "id": "xyz"}
    assert orjson.loads(success(refs, 3, "2.0")) == {"jsonrpc": "2.0", "result": refs, "id": 3}
    # key order as xapi writes it
    assert success("", 3, "2.0") == b'{"jsonrpc":"2.0","result":"","id":3}'
    assert success("", "a", "1.0") == b'{"result":"","error":null,"id":"a"}'


def test_failure_shapes_match_xapi():
    desc = ["SESSION_INVALID", "OpaqueRef:c90cd28f-37ec-4dbf-88e6-f697ccb28b39"]
    assert orjson.loads(failure(desc, "xyz", "1.0")) == {"result": None, "error": desc, "id": "xyz"}
    assert failure(desc, 3, "2.0") == (
        b'{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID",'
        b'"data":["OpaqueRef:c90cd28f-37ec-4dbf-88e6-f697ccb28b39"]},"id":3}'
    )
    assert orjson.loads(failure(["HANDLE_INVALID"], 3, "2.0"))["error"] == {
        "code": 1, "message": "HANDLE_INVALID", "data": []}


def xo_wrap(error):
    """What Xen Orchestra's xen-api XapiError.wrap extracts from a reply's `error`."""
    if isinstance(error, list):
        return error[0], error[1:]
    params = error.get("data")
    return error["message"], params if isinstance(params, list) else []


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_failure_as_xen_orchestra_reads_it(version):
    reply = orjson.loads(failure(["VM_BAD_POWER_STATE", "OpaqueRef:1", "halted", "running"], 0, version))
    assert "result" not in reply or reply["result"] is None
    assert xo_wrap(reply["error"]) == ("VM_BAD_POWER_STATE", ["OpaqueRef:1", "halted", "running"])
    if version == "2.0":
        # json-rpc-protocol's checks: integer code, string message, no result member
        err = reply["error"]
        assert type(err["code"]) is int and err["code"] != 0 and type(err["message"]) is str
        assert "result" not in reply and reply["jsonrpc"] == "2.0"


def test_protocol_error_shapes():
    assert orjson.loads(protocol_error("bad", None, "2.0", PARSE_ERROR)) == {
        "jsonrpc": "2.0", "error": {"code": -32700, "message": "bad"}, "id": None}
    assert orjson.loads(protocol_error("bad", 5, "1.0")) == {
        "result": None, "error": {"code": -32600, "message": "bad"}, "id": 5}


def test_value_encoding():
    when = dt.datetime(2026, 1, 1, 12, 0, 0, 500)
    out = orjson.loads(success({"i": 2**63 - 1, "n": -(2**63), "f": 0.1, "t": when, "b": False, "z": None,
                                "l": [1, "x"], "inf": math.inf, "nan": math.nan}, 1, "2.0"))["result"]
    assert out == {"i": 2**63 - 1, "n": -(2**63), "f": 0.1, "t": "20260101T12:00:00Z", "b": False,
                   "z": None, "l": [1, "x"], "inf": None, "nan": None}
    aware = dt.datetime(2026, 1, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert orjson.loads(success(aware, 1, "2.0"))["result"] == "20260101T12:00:00Z"


def test_unencodable_value_raises_type_error():
    with pytest.raises(TypeError):
        success(object(), 1, "2.0")


# --------------------------------------------------------------------- round trips

_ints = st.integers(-(2**63), 2**63 - 1)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_datetimes = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0)
)
_text = st.text(max_size=20)
_values = st.recursive(
    st.one_of(_text, _ints, _floats, st.booleans(), st.none(), _datetimes),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(_text, c, max_size=4),
    max_leaves=25,
)


def wire_view(v):
    if type(v) is dt.datetime:
        return f"{v.year:04d}{v.month:02d}{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"
    if type(v) is list:
        return [wire_view(x) for x in v]
    if type(v) is dict:
        return {k: wire_view(x) for k, x in v.items()}
    return v


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_values, max_size=4), _text.filter(bool), st.one_of(_ints, _text),
       st.sampled_from(["1.0", "2.0"]))
def test_roundtrip_call(params, method, rid, version):
    assert parse_call(encode_call(method, params, rid, version)) == (method, wire_view(params), rid, version)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_values, st.one_of(_ints, _text), st.sampled_from(["1.0", "2.0"]))
def test_roundtrip_response(value, rid, version):
    reply = json.loads(success(value, rid, version))  # the stdlib parser, as a client would
    assert reply["result"] == wire_view(value)
    assert reply["id"] == rid
    assert ("jsonrpc" in reply) == (version == "2.0")
