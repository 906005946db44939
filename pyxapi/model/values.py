"""Checking and converting API values (see docs/architecture.md, "Values").

`from_wire` is the single place where a decoded parameter is checked against
its model type; handlers only ever see values of the right shape.
"""
from __future__ import annotations

import datetime as _dt
import re

from ..errors import ApiError
from .types import Enum, Map, Option, Prim, Record, Ref, Set, Type

NULL_REF = "OpaqueRef:NULL"
EPOCH = _dt.datetime(1970, 1, 1)
_INT_RE = re.compile(r"-?\d+\Z")


def type_default(t: Type):
    """The value a field takes when neither the model nor the caller gives one."""
    match t:
        case Prim("string"):
            return ""
        case Prim("int"):
            return 0
        case Prim("float"):
            return 0.0
        case Prim("bool"):
            return False
        case Prim("datetime"):
            return EPOCH
        case Ref():
            return NULL_REF
        case Enum(_, values):
            return sorted(values)[0] if values else ""
        case Set():
            return []
        case Map():
            return {}
        case Record():
            return {}
    return None


def parse_default(t: Type, text: str):
    """Parse a default as the data model spells it (`"UTC"`, `{}`, `1.`, `Null`, …)."""
    text = text.strip()
    match t:
        case Prim("string"):
            return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
        case Prim("int"):
            return int(text)
        case Prim("float"):
            return float(text)
        case Prim("bool"):
            return text == "true"
        case Prim("datetime"):
            return parse_datetime(text)
        case Ref():
            return NULL_REF if text in ("Null", "", NULL_REF) else text
        case Enum():
            return text
        case Option():
            return None if text in ("None", "") else parse_default(t.elem, text)
        case Set():
            items = _split_braces(text)
            return [parse_default(t.elem, i) for i in items]
        case Map():
            out = {}
            for item in _split_braces(text):
                k, _, v = item.partition(" -> ")
                out[str(parse_default(t.key, k))] = parse_default(t.value, v)
            return out
    return type_default(t)


def _split_braces(text: str) -> list[str]:
    inner = text.strip()[1:-1].strip()
    return [p.strip() for p in inner.split(",")] if inner else []


def parse_datetime(text: str) -> _dt.datetime:
    text = text.strip().rstrip("Z").replace("-", "")
    if text.endswith("+0000") or text.endswith("+00:00"):
        text = text.rsplit("+", 1)[0]
    for fmt in ("%Y%m%dT%H:%M:%S", "%Y%m%dT%H%M%S", "%Y%m%dT%H:%M:%S.%f", "%Y%m%d"):
        try:
            return _dt.datetime.strptime(text, fmt)
        except ValueError:
            pass
    raise ValueError(f"not a datetime: {text!r}")


def from_wire(t: Type, v, name: str):
    """Check a decoded value against type `t`; `name` is the parameter for errors."""
    return _FROM_WIRE[type(t)](t, v, name)  # (one look-up, not a match over every type)


def _wrong(name: str):
    raise ApiError("FIELD_TYPE_ERROR", name)


def _string(t, v, name):  # strings and refs
    return v if type(v) is str else _wrong(name)


def _int(t, v, name):
    # Xen-API ints are int64: anything larger could not be stored or sent back
    if type(v) is str and len(v) < 32 and _INT_RE.match(v.strip()):
        v = int(v)
    if type(v) is int and -(1 << 63) <= v < (1 << 63):
        return v
    return _wrong(name)


def _bool(t, v, name):
    if type(v) is bool:
        return v
    if type(v) is str and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return _wrong(name)


def _float(t, v, name):
    if type(v) in (float, int):
        return float(v)
    if type(v) is str:
        try:
            return float(v)
        except ValueError:
            pass
    return _wrong(name)


def _datetime(t, v, name):
    if isinstance(v, _dt.datetime):
        return v.replace(tzinfo=None)
    if type(v) is str:
        try:
            return parse_datetime(v)
        except ValueError:
            pass
    return _wrong(name)


_PRIM_FROM_WIRE = {"string": _string, "int": _int, "bool": _bool, "float": _float,
                   "datetime": _datetime, "void": lambda t, v, name: None}


def _enum(t, v, name):
    if type(v) is not str:
        return _wrong(name)
    values = t.values
    if v in values or not values:
        return v
    # xapi matches enum names case-insensitively on input
    for allowed in values:
        if allowed.lower() == v.lower():
            return allowed
    raise ApiError("INVALID_VALUE", name, v)


def _set(t, v, name):
    if type(v) is not list:
        return _wrong(name)
    check = _FROM_WIRE[type(t.elem)]
    return [check(t.elem, x, name) for x in v]


def _map(t, v, name):
    if type(v) is not dict:
        return _wrong(name)
    return {_map_key(t.key, k, name): from_wire(t.value, x, name) for k, x in v.items()}


def _option(t, v, name):
    # None travels as Void, the empty string, in XML-RPC
    return None if v is None or v == "" else from_wire(t.elem, v, name)


def _record_value(t, v, name):
    return _record(t.cls, v) if type(v) is dict else _wrong(name)


_FROM_WIRE = {Prim: lambda t, v, name: _PRIM_FROM_WIRE[t.name](t, v, name), Ref: _string,
              Enum: _enum, Set: _set, Map: _map, Option: _option, Record: _record_value}


def _map_key(key_type: Type, k, name: str) -> str:
    if isinstance(key_type, Prim) and key_type.name == "int":
        return str(from_wire(key_type, k, name))
    if isinstance(key_type, Enum):
        return from_wire(key_type, k, name)
    return str(k)


def _record(cls: str, v: dict) -> dict:
    """Check the fields of a record the model knows; other keys pass through untouched
    (clients send whole records back, and handlers pick what they use)."""
    from . import load

    c = load().classes.get(cls)
    if c is None:
        return v
    fields = c.fields
    return {k: from_wire(fields[k].type, x, k) if k in fields else x for k, x in v.items()}
