"""Messages (alerts): message.create/get/get_since/destroy_many/destroy_all.

xapi keeps messages outside its database, but they are objects of the event
stream all the same (Xen Orchestra watches them through event.from). Here they
are rows of the store, so every create and destroy goes through its one write
path and is seen by event.from like any other object. The generic handlers
serve get_record, get_all, get_all_records, get_by_uuid and destroy.
"""
from __future__ import annotations

import datetime as _dt
import re

from ..db.store import now
from ..errors import ApiError
from ..model.values import parse_datetime
from .registry import action

# the `cls` enum → the class whose object a message is about
CLASS_OF = {"VM": "VM", "Host": "host", "SR": "SR", "Pool": "pool", "VMPP": "VMPP",
            "VMSS": "VMSS", "PVS_proxy": "PVS_proxy", "VDI": "VDI", "Certificate": "Certificate"}

# xapi keeps at most this many messages (Xapi_globs.message_limit), dropping the oldest
MESSAGE_LIMIT = 10_000

# characters XML 1.0 cannot carry: xapi refuses such a body ("UTF8 expected")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _object_exists(store, cls: str, obj_uuid: str) -> bool:
    return store.by_uuid(CLASS_OF[cls], obj_uuid) is not None


def create_message(store, name: str, priority: int, cls: str, obj_uuid: str, body: str) -> str:
    """A new message about an existing object: what the server itself may raise as alerts."""
    if _NOT_XML.search(body):
        raise ApiError("INVALID_VALUE", "UTF8 expected")
    if not _object_exists(store, cls, obj_uuid):
        raise ApiError("UUID_INVALID", cls, obj_uuid)
    ref = store.create("message", {"name": name, "priority": priority, "cls": cls,
                                   "obj_uuid": obj_uuid, "timestamp": now(), "body": body})
    table = store.tables["message"]
    # the oldest go first: messages are never updated, so the table keeps them in the order
    # they were made (across a restart too: rows load in the order they were stored)
    while len(table) > MESSAGE_LIMIT:
        store.destroy("message", next(iter(table)))
    return ref


def _newest_first(store, refs) -> dict:
    """ref → record, newest first, as xapi lists them."""
    table = store.tables["message"]
    ordered = sorted(reversed(list(refs)), key=lambda r: table[r]["timestamp"], reverse=True)
    return {r: store.record("message", r) for r in ordered}


@action("message.create")
def create(ctx, name, priority, cls, obj_uuid, body):
    return create_message(ctx.store, name, priority, cls, obj_uuid, body)


@action("message.get")
def get(ctx, cls, obj_uuid, since):
    store = ctx.store
    if not _object_exists(store, cls, obj_uuid):
        raise ApiError("UUID_INVALID")  # xapi names neither the class nor the uuid here
    return _newest_first(store, (r for r, row in store.tables["message"].items()
                                 if row["cls"] == cls and row["obj_uuid"] == obj_uuid
                                 and row["timestamp"] > since))


@action("message.get_since")
def get_since(ctx, since):
    store = ctx.store
    return _newest_first(store, (r for r, row in store.tables["message"].items()
                                 if row["timestamp"] > since))


@action("message.destroy_many")
def destroy_many(ctx, messages):
    store = ctx.store
    for ref in messages:  # all checked first: a bad ref leaves every message in place
        if not store.exists("message", ref):
            raise ApiError("HANDLE_INVALID", "message", ref)
    for ref in dict.fromkeys(messages):
        store.destroy("message", ref)


def _filter_time(key: str, text: str) -> _dt.datetime:
    """An RFC 3339 (or xapi-style) date; no time zone means UTC."""
    try:
        t = _dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            return parse_datetime(text)
        except ValueError:
            raise ApiError("INVALID_VALUE", key, text) from None
    if t.tzinfo is not None:
        t = t.astimezone(_dt.UTC).replace(tzinfo=None)
    return t


@action("message.destroy_all")
def destroy_all(ctx, filters):
    """Messages matching every given filter (before, after, priority); all of them if none."""
    checks = []
    for key, value in filters.items():
        if key == "before":
            t = _filter_time(key, value)
            checks.append(lambda row, t=t: row["timestamp"] < t)
        elif key == "after":
            t = _filter_time(key, value)
            checks.append(lambda row, t=t: row["timestamp"] > t)
        elif key == "priority":
            try:
                p = int(value)
            except ValueError:
                raise ApiError("INVALID_VALUE", key, value) from None
            checks.append(lambda row, p=p: row["priority"] == p)
        else:  # an unknown filter must not widen the call to "destroy everything"
            raise ApiError("INVALID_VALUE", key, value)
    store = ctx.store
    doomed = [r for r, row in store.tables["message"].items() if all(c(row) for c in checks)]
    for ref in doomed:
        store.destroy("message", ref)
