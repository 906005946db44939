"""Structs of a shape seen before (records) are written from a plan (`_enc_planned`): the
bytes must be exactly those of writing them member by member, whatever the values — every
type, markup to escape, characters XML cannot carry, "%" in names, a value whose type
differs from the one the plan was made for, subclasses."""
from __future__ import annotations

import datetime as dt
import enum
import xmlrpc.client

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxapi.wire import xmlrpc as x

NASTY = st.text(st.sampled_from(["a", "\r", "\x01", "\ud800", "\ufffe", "&", "<", ">", "é", "%", "d"]),
                max_size=5)


class Colour(str, enum.Enum):
    RED = "red&"


class Level(enum.IntEnum):
    HIGH = 3


SCALARS = (NASTY | st.integers(-2**63, 2**63 - 1) | st.booleans() | st.none()
           | st.floats(allow_nan=False) | st.just(float("inf"))
           | st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1))
           | st.sampled_from([Colour.RED, Level.HIGH, (), ("t",)]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(NASTY, inner, max_size=3), max_leaves=8)
NAMES = st.lists(NASTY | st.sampled_from(["uuid", "name_label", "%d", "a&b", "VBDs"]),
                 min_size=x._PLAN_MIN, max_size=x._PLAN_MIN + 4, unique=True)


def _member_by_member(encode, value):
    with pytest.MonkeyPatch.context() as m:
        m.setattr(x, "_PLAN_MIN", 10**9)
        return encode(value)


@settings(max_examples=300, deadline=None)
@given(names=NAMES, data=st.data())
def test_planned_records_give_the_same_bytes(names, data):
    x._PLANS.clear()
    # mostly one type per field (a table's records), sometimes another (an Option field)
    kinds = [data.draw(SCALARS | st.just("map") | st.just("set")) for _ in names]
    records = []
    for _ in range(data.draw(st.integers(2, 5))):
        rec = {}
        for name, kind in zip(names, kinds):
            if data.draw(st.integers(0, 4)) == 0:
                rec[name] = data.draw(VALUES)
            elif kind == "map":
                rec[name] = data.draw(st.dictionaries(NASTY, NASTY, max_size=2))
            elif kind == "set":
                rec[name] = data.draw(st.lists(NASTY, max_size=2))
            else:
                rec[name] = data.draw(st.from_type(type(kind))) if type(kind) in (str, int, bool) else kind
        records.append(rec)
    value = {f"OpaqueRef:{i}": r for i, r in enumerate(records)}
    for encode in (x.success, x.encode_response):
        assert encode(value) == _member_by_member(encode, value)
    assert x._PLANS  # the plan path was taken


def test_records_read_back_and_share_one_plan():
    x._PLANS.clear()
    base = {"uuid": "u", "name_label": "a <b> & c", "n": 5, "ok": True, "f": 1.5, "none": None,
            "when": dt.datetime(2026, 1, 2, 3, 4, 5), "map": {}, "set": [], "refs": ["r1", "r2"],
            "%s": "percent", "text": "line\r\nend\x01"}
    records = {f"OpaqueRef:{i}": {**base, "n": i, "ok": i % 2 == 0} for i in range(5)}
    body = x.success(records)
    assert body == _member_by_member(x.success, records)
    names = tuple(base)
    assert len(x._PLANS[names]) == 1  # one plan: every record has the same types
    (reply,), _ = xmlrpc.client.loads(body)
    got = reply["Value"]["OpaqueRef:3"]
    assert got["name_label"] == "a <b> & c" and got["n"] == "3" and got["ok"] is False
    assert got["text"] == "line\r\nend" and got["%s"] == "percent" and got["none"] == ""
    assert got["when"].value == "20260102T03:04:05Z" and got["refs"] == ["r1", "r2"]


def test_a_bool_where_the_plan_has_an_int_is_still_a_boolean():
    x._PLANS.clear()
    rows = [{f"k{i}": i for i in range(x._PLAN_MIN)} for _ in range(3)]
    rows[2]["k0"] = True  # same names, other types: another plan, not the int one
    body = x.encode_response(rows)
    assert body == _member_by_member(x.encode_response, rows)
    assert b"<name>k0</name><value><boolean>1</boolean></value>" in body


def test_plans_are_bounded():
    x._PLANS.clear()
    for i in range(x._PLANS_MAX + 10):
        rec = {f"key{i}-{j}": "v" for j in range(x._PLAN_MIN)}
        x.encode_response([rec, rec])
    assert len(x._PLANS) <= x._PLANS_MAX
