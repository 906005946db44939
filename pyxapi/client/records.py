"""Records as `xe` shows them, driven by the data model.

xe names a class in lower case with `-` for `_` (VM → vm, host_cpu → host-cpu) and a
field with `-` for `_` (name_label → name-label); it prints each field with its access
qualifier ( RO, RW, MRO, MRW, SRO, SRW), enums in lower case, refs as the referenced
object's uuid, maps as `k: v; k2: v2` and sets as `a; b`.
"""
from __future__ import annotations

import json

from ..model import Class, load
from ..model.types import Enum, Map, Option, Prim, Ref, Set
from .connection import Failure, UsageError

NULL_REF = "OpaqueRef:NULL"
NOT_IN_DB = "<not in database>"

# The fields `<class>-list` prints when no params= is given (xe's choice where it has one).
DEFAULT_FIELDS = {
    "VM": ["uuid", "name_label", "power_state"],
    "SR": ["uuid", "name_label", "name_description", "type", "content_type"],
    "VDI": ["uuid", "name_label", "name_description", "SR", "virtual_size", "read_only"],
    "network": ["uuid", "name_label", "name_description", "bridge"],
    "pool": ["uuid", "name_label", "name_description", "master", "default_SR"],
    "task": ["uuid", "name_label", "name_description", "status", "progress"],
    "VBD": ["uuid", "VM", "VDI", "userdevice", "empty"],
    "VIF": ["uuid", "VM", "network", "device", "MAC"],
    "PBD": ["uuid", "host", "SR", "currently_attached"],
    "PIF": ["uuid", "device", "MAC", "currently_attached", "VLAN", "network"],
}
# xe spellings that are not simply the class name in lower case
CLASS_ALIASES = {"template": "VM", "snapshot": "VM"}


def model():
    return load()


def xe_name(name: str) -> str:
    return name.replace("_", "-")


def class_of(command: str) -> tuple[str, str, str]:
    """Split `host-cpu-param-list` into (xe class, model class, action)."""
    classes = {xe_name(c).lower(): c for c in model().classes}
    classes.update(CLASS_ALIASES)
    for xe_cls in sorted(classes, key=len, reverse=True):
        if command.lower().startswith(xe_cls + "-"):
            return xe_cls, classes[xe_cls], command[len(xe_cls) + 1:]
    raise UsageError(f"Unknown command: {command} (try `pyxapi help`)")


def field_of(c: Class, key: str) -> str | None:
    """The model field an xe field name stands for (case and `-`/`_` insensitive)."""
    want = key.replace("-", "_").lower()
    for name in c.fields:
        if name.lower() == want:
            return name
    return None


def qualifier(c: Class, field: str) -> str:
    t = c.fields[field].type
    msgs = c.messages
    kind = "M" if isinstance(t, Map) else "S" if isinstance(t, Set) else " "
    writable = (f"set_{field}" in msgs or f"add_to_{field}" in msgs or f"add_{field}" in msgs)
    return f"{kind}{'RW' if writable else 'RO'}"


class Resolver:
    """Ref → uuid for display, asking the server once per ref."""

    def __init__(self, conn):
        self.conn = conn
        self.cache: dict[str, str] = {NULL_REF: NOT_IN_DB, "": NOT_IN_DB}

    def uuid(self, cls: str, ref: str) -> str:
        if ref not in self.cache:
            c = model().classes.get(cls)
            if c is None or not c.has_uuid:
                self.cache[ref] = ref
            else:
                try:
                    self.cache[ref] = self.conn.api(f"{cls}.get_uuid", ref)
                except Failure:
                    self.cache[ref] = NOT_IN_DB
        return self.cache[ref]


def show(t, v, resolve: Resolver) -> str:
    """A field value as xe prints it."""
    if v is None:
        return ""
    if isinstance(t, Option):
        return show(t.elem, v, resolve)
    if isinstance(t, Ref):
        return resolve.uuid(t.cls, v)
    if isinstance(t, Enum):
        return str(v).lower()
    if isinstance(t, Prim) and t.name == "bool":
        return "true" if v else "false"
    if isinstance(t, Set):
        return "; ".join(show(t.elem, x, resolve) for x in v)
    if isinstance(t, Map):
        return "; ".join(f"{show(t.key, k, resolve)}: {show(t.value, x, resolve)}" for k, x in v.items())
    return str(v)


def as_json(t, v, resolve: Resolver):
    """A field value for --json: typed, refs as uuids."""
    if v is None:
        return None
    if isinstance(t, Option):
        return as_json(t.elem, v, resolve)
    if isinstance(t, Ref):
        return resolve.uuid(t.cls, v)
    if isinstance(t, Prim) and t.name == "int":
        return int(v)
    if isinstance(t, Prim) and t.name == "float":
        return float(v)
    if isinstance(t, Enum):
        return str(v).lower()
    if isinstance(t, Set):
        return [as_json(t.elem, x, resolve) for x in v]
    if isinstance(t, Map):
        return {str(k): as_json(t.value, x, resolve) for k, x in v.items()}
    return v


def from_text(c: Class, field: str, text: str, conn):
    """A command-line value for a field, converted for the call (uuids → refs)."""
    t = c.fields[field].type
    return convert(t, text, conn, field)


def convert(t, text: str, conn, name: str):
    if isinstance(t, Prim) and t.name == "bool":
        if text.lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            raise UsageError(f"{xe_name(name)}: expected true or false, not {text!r}")
        return text.lower() in ("true", "yes", "1", "on")
    if isinstance(t, Prim) and t.name == "int":
        try:
            return int(parse_size(text))
        except ValueError:
            raise UsageError(f"{xe_name(name)}: expected a number, not {text!r}") from None
    if isinstance(t, Prim) and t.name == "float":
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{xe_name(name)}: expected a number, not {text!r}") from None
    if isinstance(t, Ref):
        if text.startswith("OpaqueRef:"):
            return text
        return conn.api(f"{t.cls}.get_by_uuid", text)
    if isinstance(t, Set):
        return [convert(t.elem, x.strip(), conn, name) for x in text.split(",") if x.strip()]
    return text  # string, enum (the server matches enum names without case), datetime


_SIZE_UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "K": 2**10, "M": 2**20,
               "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """`10737418240`, `10GiB` or `512MiB` (xe's units for disk and memory sizes)."""
    for unit, mult in _SIZE_UNITS.items():
        if text.endswith(unit) and text[: -len(unit)].strip().isdigit():
            return int(text[: -len(unit)]) * mult
    return int(text)


def default_fields(c: Class) -> list[str]:
    if c.name in DEFAULT_FIELDS:
        return [f for f in DEFAULT_FIELDS[c.name] if f in c.fields]
    return [f for f in ("uuid", "name_label", "name_description") if f in c.fields] or list(c.fields)[:3]


def choose_fields(c: Class, params: str | None, all_by_default: bool) -> list[str]:
    if params is None:
        return list(c.fields) if all_by_default else default_fields(c)
    if params == "all":
        return list(c.fields)
    out = []
    for key in params.split(","):
        f = field_of(c, key.strip())
        if f is None:
            raise UsageError(f"Unknown field '{key.strip()}' of {xe_name(c.name).lower()}")
        out.append(f)
    return out


def select(conn, c: Class, filters: dict[str, str], resolve: Resolver) -> dict[str, dict]:
    """The records matching every `field=value` filter (values compared as xe shows them).

    `uuid=` is looked up directly; `X-uuid=` matches a Ref field X by the uuid it points to.
    """
    if "uuid" in filters and c.has_uuid:
        try:
            ref = conn.api(f"{c.name}.get_by_uuid", filters["uuid"])
        except Failure as e:
            if e.code == "UUID_INVALID":
                return {}
            raise
        records = {ref: conn.api(f"{c.name}.get_record", ref)}
    elif "get_all_records" in c.messages:
        records = conn.api(f"{c.name}.get_all_records")
    else:
        raise UsageError(f"{xe_name(c.name).lower()} objects cannot be listed")
    checks = []
    for key, want in filters.items():
        f = field_of(c, key)
        if f is None and key.lower().endswith("-uuid"):
            f = field_of(c, key[:-5])
            if f is None or not isinstance(c.fields[f].type, Ref):
                f = None
        if f is None:
            raise UsageError(f"Unknown field '{key}' of {xe_name(c.name).lower()}")
        checks.append((f, want))
    out = {}
    for ref, rec in records.items():
        for f, want in checks:
            got = show(c.fields[f].type, rec.get(f), resolve)
            if isinstance(c.fields[f].type, Enum):
                got, want = got.lower(), want.lower()
            if got != want:
                break
        else:
            out[ref] = rec
    return out


def print_records(c: Class, records: list[dict], fields: list[str], resolve: Resolver, out) -> None:
    """xe's layout: the first key padded on the right, the others on the left, blank lines between."""
    for rec in records:
        rows = [(f"{xe_name(f)} ({qualifier(c, f)})", show(c.fields[f].type, rec.get(f), resolve))
                for f in fields]
        width = 4 + max(len(k) for k, _ in rows)
        lines = [f"{rows[0][0].ljust(width)}: {rows[0][1]}"]
        lines += [f"{k.rjust(width)}: {v}" for k, v in rows[1:]]
        out.write("\n".join(lines) + "\n\n\n")


def print_minimal(c: Class, records: list[dict], fields: list[str], resolve: Resolver, out) -> None:
    """--minimal: the first chosen field of each record, comma-separated (commas escaped)."""
    f = fields[0]
    vals = [show(c.fields[f].type, rec.get(f), resolve).replace("\\", "\\\\").replace(",", "\\,")
            for rec in records]
    out.write(",".join(vals) + "\n")


def print_json(c: Class, records: list[dict], fields: list[str], resolve: Resolver, out) -> None:
    rows = [{xe_name(f): as_json(c.fields[f].type, rec.get(f), resolve) for f in fields} for rec in records]
    out.write(json.dumps(rows, indent=2) + "\n")
