"""API types, parsed from the data model's type strings.

`"(string -> VM ref set) map"` becomes `Map(Prim("string"), Set(Ref("VM")))`.
"""
from __future__ import annotations

from dataclasses import dataclass


class Type:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Prim(Type):
    name: str  # string, int, float, bool, datetime, void


@dataclass(frozen=True, slots=True)
class Ref(Type):
    cls: str


@dataclass(frozen=True, slots=True)
class Enum(Type):
    name: str
    values: frozenset = frozenset()

    def __eq__(self, other):
        return isinstance(other, Enum) and other.name == self.name

    def __hash__(self):
        return hash(("enum", self.name))


@dataclass(frozen=True, slots=True)
class Set(Type):
    elem: Type


@dataclass(frozen=True, slots=True)
class Map(Type):
    key: Type
    value: Type


@dataclass(frozen=True, slots=True)
class Record(Type):
    cls: str


@dataclass(frozen=True, slots=True)
class Option(Type):
    elem: Type


STRING = Prim("string")
INT = Prim("int")
FLOAT = Prim("float")
BOOL = Prim("bool")
DATETIME = Prim("datetime")
VOID = Prim("void")
PRIMS = {p.name: p for p in (STRING, INT, FLOAT, BOOL, DATETIME, VOID)}


def parse_type(text: str, enums: dict[str, frozenset] | None = None) -> Type:
    """Parse a model type string; `enums` maps enum names to their values."""
    text = text.strip()
    if text.startswith("(") and text.endswith(") map"):
        inner = text[1 : -len(") map")]
        key, value = _split_arrow(inner)
        return Map(parse_type(key, enums), parse_type(value, enums))
    for suffix, make in ((" set", Set), (" option", Option)):
        if text.endswith(suffix):
            return make(parse_type(text[: -len(suffix)], enums))
    if text.endswith(" ref"):
        return Ref(text[: -len(" ref")])
    if text.endswith(" record"):
        return Record(text[: -len(" record")])
    if text.startswith("enum "):
        name = text[len("enum ") :]
        return Enum(name, (enums or {}).get(name, frozenset()))
    if text in PRIMS:
        return PRIMS[text]
    if text == "an event batch":  # event.from's result: a struct the event code builds
        return Record("event_batch")
    if enums and text in enums:  # defaults and a few params name the enum bare
        return Enum(text, enums[text])
    raise ValueError(f"unknown type {text!r}")


def _split_arrow(inner: str) -> tuple[str, str]:
    depth = 0
    for i, ch in enumerate(inner):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and inner.startswith(" -> ", i):
            return inner[:i], inner[i + 4 :]
    raise ValueError(f"map type without '->': {inner!r}")


def type_name(t: Type) -> str:
    """The model's spelling of a type, for messages and docs."""
    match t:
        case Prim(name):
            return name
        case Ref(cls):
            return f"{cls} ref"
        case Enum(name):
            return f"enum {name}"
        case Set(elem):
            return f"{type_name(elem)} set"
        case Option(elem):
            return f"{type_name(elem)} option"
        case Record(cls):
            return f"{cls} record"
        case Map(key, value):
            return f"({type_name(key)} -> {type_name(value)}) map"
    raise TypeError(t)
