"""The messages the data model generates for every class, implemented once.

`generic_handler(model_class, message)` returns the handler for an implicit
message (getter, setter, record, create, …) or None when the name is not one
of the generated shapes. Handlers take (ctx, args) with args already checked.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc

from ..db.query import compile_filter
from ..db.store import new_ref
from ..errors import ApiError
from ..model import Class, Message
from ..model.types import Record, Ref
from ..model.values import NULL_REF, from_wire


def generic_handler(c: Class, msg: Message):
    name = msg.name
    cls = c.name
    fields = c.fields

    if name == "get_record":
        return lambda ctx, a: ctx.store.record(cls, a[0])
    if name == "get_all":
        return lambda ctx, a: ctx.store.refs(cls)
    if name == "get_all_records":
        return lambda ctx, a: _all_records(ctx.store, cls)
    if name == "get_all_records_where":
        return lambda ctx, a: _records_where(ctx.store, cls, a[0])
    if name == "get_by_uuid":
        return lambda ctx, a: _by_uuid(ctx.store, cls, a[0])
    if name == "get_by_name_label":
        return lambda ctx, a: ctx.store.find(cls, name_label=a[0])
    if name == "create" and isinstance(msg.params[-1].type, Record):
        return lambda ctx, a: create_from_record(ctx, cls, a[0])
    if name == "destroy":
        return lambda ctx, a: ctx.store.destroy(cls, a[0])
    if name.startswith("get_") and name[4:] in fields:
        field = name[4:]
        if field in c.derived:
            return lambda ctx, a: ctx.store.field(cls, a[0], field)
        return lambda ctx, a: ctx.store.get(cls, a[0])[field]  # (the most frequent call)
    if name.startswith("set_") and name[4:] in fields:
        field = name[4:]
        return lambda ctx, a: ctx.store.update(cls, a[0], {field: a[1]})
    if name.startswith("add_to_") and name[7:] in fields:
        return _map_add(cls, name[7:])
    if name.startswith("remove_from_") and name[12:] in fields:
        return _map_remove(cls, name[12:])
    if name.startswith("add_") and name[4:] in fields:
        return _set_add(cls, name[4:])
    if name.startswith("remove_") and name[7:] in fields:
        return _set_remove(cls, name[7:])
    return None


def _pause_gc() -> None:
    """Many records at once are ~10 new containers each, none in a reference cycle. Left on,
    the collector walks them again and again while they are built (a third of the time of
    VM.get_all_records with 10,000 VMs, mostly in full collections). It is off until the
    event loop's next turn: by then the reply is encoded and the records freed."""
    if gc.isenabled():
        gc.disable()
        try:
            asyncio.get_running_loop().call_soon(gc.enable)
        except RuntimeError:  # no event loop (offline use): nothing to wait for
            gc.enable()


def _all_records(store, cls):
    _pause_gc()
    record = store.record
    return {ref: record(cls, ref) for ref in store.tables[cls]}


def _records_where(store, cls, expr):
    match = compile_filter(expr)
    _pause_gc()
    out = {}
    for ref in store.tables[cls]:
        rec = store.record(cls, ref)
        if match(rec):
            out[ref] = rec
    return out


def _by_uuid(store, cls, uuid):
    ref = store.by_uuid(cls, uuid)
    if ref is None:
        raise ApiError("UUID_INVALID", cls, uuid)
    return ref


def _map_add(cls, field):
    def add(ctx, a):
        ref, key, value = a
        row = ctx.store.get(cls, ref)
        if key in row[field]:
            raise ApiError("MAP_DUPLICATE_KEY", cls, field, row.get("uuid", ref), key)
        ctx.store.update(cls, ref, {field: {**row[field], key: value}})

    return add


def _map_remove(cls, field):
    def remove(ctx, a):
        ref, key = a
        current = ctx.store.get(cls, ref)[field]
        if key in current:
            ctx.store.update(cls, ref, {field: {k: v for k, v in current.items() if k != key}})

    return remove


def _set_add(cls, field):
    def add(ctx, a):
        ref, value = a
        current = ctx.store.get(cls, ref)[field]
        if value not in current:
            ctx.store.update(cls, ref, {field: [*current, value]})

    return add


def _set_remove(cls, field):
    def remove(ctx, a):
        ref, value = a
        current = ctx.store.get(cls, ref)[field]
        if value in current:
            ctx.store.update(cls, ref, {field: [v for v in current if v != value]})

    return remove


def set_allowed_operations(store, cls: str, ref: str, ops: list[str]) -> None:
    """Write an object's allowed_operations when they changed (a write is an event)."""
    if sorted(ops) != sorted(store.get(cls, ref)["allowed_operations"]):
        store.update(cls, ref, {"allowed_operations": ops})


def begin_operation(store, cls: str, ref: str, key: str, op: str, update_ops) -> None:
    """Show `op` in the object's current_operations under `key` (the task doing it);
    `update_ops(store, ref)` keeps its allowed_operations in step."""
    store.update(cls, ref, {"current_operations": {**store.get(cls, ref)["current_operations"],
                                                   key: op}})
    update_ops(store, ref)


def end_operation(store, cls: str, ref: str, key: str, update_ops) -> None:
    if store.exists(cls, ref):
        ops = {k: v for k, v in store.get(cls, ref)["current_operations"].items() if k != key}
        store.update(cls, ref, {"current_operations": ops})
        update_ops(store, ref)


@contextlib.contextmanager
def operations_in_progress(ctx, *marks):
    """Each (cls, ref, op, update_ops) shows in current_operations while the block runs,
    failure and cancellation included, under the call's task (a call without a task gets a
    ref of its own, as every xapi call has a task)."""
    key = ctx.task or new_ref()
    for cls, ref, op, update_ops in marks:
        begin_operation(ctx.store, cls, ref, key, op, update_ops)
    try:
        yield key
    finally:
        for cls, ref, _, update_ops in marks:
            end_operation(ctx.store, cls, ref, key, update_ops)


def check_record(ctx, cls: str, given: dict, *, ignore: tuple = ()) -> dict:
    """Check a `<class> record` argument field by field, the way `create` takes it.

    Unknown keys are ignored (clients send whole records back); refs must
    exist or be NULL.
    """
    c = ctx.store.model.classes[cls]
    out = {}
    for name, value in given.items():
        f = c.fields.get(name)
        if f is None or name in c.derived or name in ignore:
            continue
        v = from_wire(f.type, value, name)
        if isinstance(f.type, Ref) and v != NULL_REF and not ctx.store.exists(f.type.cls, v):
            raise ApiError("HANDLE_INVALID", f.type.cls, v)
        out[name] = v
    return out


def create_from_record(ctx, cls: str, given: dict) -> str:
    fields = check_record(ctx, cls, given, ignore=("uuid",))
    return ctx.store.create(cls, fields)
