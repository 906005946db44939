"""Every type the data model uses survives both codecs: value → wire → value, checked by
`from_wire` exactly as the dispatcher checks parameters."""
import datetime as dt
import xmlrpc.client

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxapi import model as _model
from pyxapi.errors import ApiError
from pyxapi.model.types import Enum, Map, Option, Prim, Record, Ref, Set, type_name
from pyxapi.model.values import from_wire
from pyxapi.wire import jsonrpc, xmlrpc as xcodec

MODEL = _model.load()
XML_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00\ufffe\uffff"
                                 ) .filter(lambda c: c in "\t\n" or c >= " "), max_size=20)


def all_types():
    seen = {}
    for c in MODEL.classes.values():
        for f in c.fields.values():
            seen.setdefault(type_name(f.type), f.type)
        for m in c.messages.values():
            for p in m.params:
                seen.setdefault(type_name(p.type), p.type)
    return [t for name, t in sorted(seen.items()) if not isinstance(t, Record) or t.cls in MODEL.classes]


def values_of(t, depth=0):
    match t:
        case Prim("string"):
            return XML_TEXT
        case Prim("int"):
            return st.integers(-(2**63), 2**63 - 1)
        case Prim("float"):
            return st.floats(allow_nan=False, allow_infinity=False)
        case Prim("bool"):
            return st.booleans()
        case Prim("datetime"):
            return st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
                lambda d: d.replace(microsecond=0))
        case Ref(cls):
            return st.uuids().map(lambda u: f"OpaqueRef:{u}")
        case Enum(_, values):
            return st.sampled_from(sorted(values))
        case Set(elem):
            return st.lists(values_of(elem, depth + 1), max_size=3)
        case Map(key, value):
            return st.dictionaries(values_of(key, depth + 1).map(str), values_of(value, depth + 1), max_size=3)
        case Option(Prim("string")):
            # Void/None travels as the empty string, so an optional "" reads back as None
            return st.none() | XML_TEXT.filter(bool)
        case Option(elem):
            return st.none() | values_of(elem, depth + 1)
        case Record(cls):
            fields = MODEL.classes[cls].fields
            if depth > 1:
                return st.just({})
            return st.fixed_dictionaries({n: values_of(f.type, depth + 1) for n, f in list(fields.items())[:8]})
    return st.just(None)


def plain(v):
    """xmlrpc.client's DateTime objects as the strings a client would pass back."""
    if isinstance(v, xmlrpc.client.DateTime):
        return v.value
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


TYPES = all_types()


def test_model_uses_many_types():
    assert len(TYPES) > 100


@pytest.mark.parametrize("t", TYPES, ids=type_name)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_type_round_trips_through_both_codecs(t, data):
    if isinstance(t, Prim) and t.name == "void":
        return
    value = data.draw(values_of(t))
    # XML-RPC: as a request parameter (what clients send) and as a response (what we send)
    method, params = xcodec.parse_call(xcodec.encode_call("X.y", [value]))
    assert from_wire(t, params[0], "p") == value
    (decoded,), _ = xmlrpc.client.loads(xcodec.success(value))
    assert from_wire(t, plain(decoded["Value"]), "p") == value
    # JSON-RPC
    method, params, _, _ = jsonrpc.parse_call(jsonrpc.encode_call("X.y", [value]))
    assert from_wire(t, params[0], "p") == value


def test_wrong_types_are_field_type_errors():
    with pytest.raises(ApiError) as e:
        from_wire(Prim("int"), "12x", "count")
    assert e.value.description == ["FIELD_TYPE_ERROR", "count"]
    with pytest.raises(ApiError) as e:
        from_wire(Set(Ref("VM")), "OpaqueRef:x", "vms")
    assert e.value.description == ["FIELD_TYPE_ERROR", "vms"]
