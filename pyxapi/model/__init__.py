"""The Xen-API data model, loaded once from the vendored JSON in `data/`.

Everything that the model can say — dispatch, accessors, type checks, defaults,
relations, error parameters — is derived from here, never typed by hand.
"""
from __future__ import annotations

import functools
import json
import pathlib
from dataclasses import dataclass, field

from .types import Ref, Set, Type, parse_type
from .values import parse_default, type_default

DATA = pathlib.Path(__file__).parent / "data"


@dataclass(slots=True)
class Field:
    name: str
    type: Type
    qualifier: str  # RW, RO/runtime, RO/constructor
    default: object
    has_default: bool
    state: str


@dataclass(slots=True)
class Param:
    name: str
    type: Type
    required: bool


@dataclass(slots=True)
class Message:
    cls: str
    name: str
    params: list[Param]  # the session param, when there is one, included
    result: Type
    errors: list[str]
    roles: frozenset[str]
    implicit: bool
    state: str
    takes_session: bool = False

    @property
    def wire_name(self) -> str:
        return f"{self.cls}.{self.name}"


@dataclass(slots=True)
class Class:
    name: str
    state: str
    fields: dict[str, Field]
    messages: dict[str, Message]
    enums: dict[str, frozenset]
    # Set(Ref) fields derived from a Ref field elsewhere: field -> (other class, its field)
    derived: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Ref fields whose change must move this ref between sets: field -> (other class, its set field)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def has_uuid(self) -> bool:
        return "uuid" in self.fields


@dataclass(slots=True)
class Model:
    classes: dict[str, Class]
    errors: dict[str, list[str]]
    enums: dict[str, frozenset]

    def message(self, wire_name: str) -> Message | None:
        cls, _, name = wire_name.partition(".")
        c = self.classes.get(cls)
        return c.messages.get(name) if c else None


@functools.cache
def load() -> Model:
    raw = json.loads((DATA / "xenapi.json").read_text())
    errors = json.loads((DATA / "errors.json").read_text())
    enums: dict[str, frozenset] = {}
    for c in raw:
        for name, values in c["enums"].items():
            enums[name] = frozenset(values)
    # types are immutable and their texts repeat (thousands of "string", "VM ref", ...): each
    # text is parsed once
    parse = functools.cache(lambda text: parse_type(text, enums))
    classes = {}
    for c in raw:
        fields = {}
        for f in c["fields"]:
            if f["state"] == "Removed_s":
                continue
            t = parse(f["type"])
            has_default = "default" in f
            default = parse_default(t, f["default"]) if has_default else type_default(t)
            fields[f["name"]] = Field(f["name"], t, f["qualifier"], default, has_default, f["state"])
        messages = {}
        for m in c["messages"]:
            params = [Param(p["name"], parse(p["type"]), p["required"]) for p in m["params"]]
            msg = Message(
                cls=c["name"],
                name=m["name"],
                params=params,
                result=parse(m["result"]),
                errors=m["errors"],
                roles=frozenset(m["roles"]),
                implicit=m["implicit"],
                state=m["state"],
                takes_session=bool(params) and params[0].type == Ref("session")
                and params[0].name == "session_id",
            )
            messages[m["name"]] = msg
        _add_records_where(c["name"], messages)
        classes[c["name"]] = Class(c["name"], c["state"], fields, messages,
                                   {k: frozenset(v) for k, v in c["enums"].items()})
    _wire_relations(classes)
    return Model(classes, errors, enums)


def _add_records_where(cls: str, messages: dict[str, Message]) -> None:
    """xapi generates get_all_records_where beside get_all_records but leaves it
    out of the published model; add it the same way."""
    base = messages.get("get_all_records")
    if base is None or "get_all_records_where" in messages:
        return
    messages["get_all_records_where"] = Message(
        cls=cls, name="get_all_records_where",
        params=[base.params[0], Param("expr", parse_type("string"), True)],
        result=base.result, errors=[], roles=base.roles, implicit=True,
        state=base.state, takes_session=True)


def _wire_relations(classes: dict[str, Class]) -> None:
    """Pair each `A.f : B ref` with the `B.g : A ref set` that mirrors it.

    The pairs come from xapi's own relation list (data/relations.json); only
    one-to-many pairs are derived, many-to-many sets are stored as they are.
    """
    path = DATA / "relations.json"
    if not path.exists():
        return
    for (ca, fa), (cb, fb) in json.loads(path.read_text()):
        for (one_cls, one_field), (many_cls, many_field) in (((ca, fa), (cb, fb)), ((cb, fb), (ca, fa))):
            one = classes.get(one_cls)
            many = classes.get(many_cls)
            if not one or not many:
                continue
            f1 = one.fields.get(one_field)
            f2 = many.fields.get(many_field)
            if not f1 or not f2:
                continue
            if f1.type == Ref(many_cls) and f2.type == Set(Ref(one_cls)):
                one.links[one_field] = (many_cls, many_field)
                many.derived[many_field] = (one_cls, one_field)
