"""The audit log: one JSON line per state-changing call, as xapi keeps one.

    {"time": "2026-11-25T19:40:01.123Z", "user": "alice", "subject": "local:alice",
     "session": "3f9c…", "originator": "XenCenter", "peer": "127.0.0.1",
     "call": "VM.set_name_label", "args": ["OpaqueRef:…", "web"], "outcome": "success"}

Written from one place (`Dispatcher.call`) for every call except getters and event
reads, whatever its outcome (a refused call is logged with its error). An Async call that
was accepted is logged when its task ends, with the task's outcome (as xapi, whose audit
line follows the work): `"task"` names it; one still running when the server stops is
logged then, with outcome "pending". Never written:
session refs (bearer secrets; a session appears as a hash of its ref, like xapi's
trackid) and passwords or secrets in arguments.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import pathlib
from contextvars import ContextVar

import orjson

from ..errors import ApiError

log = logging.getLogger("pyxapi.audit")

# The client address of the request being served (set by the ASGI app).
peer: ContextVar[str] = ContextVar("peer", default="")

_SECRET_PARAMS = ("pwd", "password", "secret")
_MAX_ARG = 256  # characters kept of each argument


def trackid(session_ref: str) -> str:
    return hashlib.sha256(session_ref.encode()).hexdigest()[:16]


def audited(msg) -> bool:
    """Calls that may change state: not getters, not event reads."""
    return not (msg.name.startswith("get_") or msg.cls == "event")


class Audit:
    def __init__(self, path: pathlib.Path | None):
        self.path = path
        self.file = open(path, "ab") if path else None
        self._plans: dict[str, object] = {}
        self._quiet: set[str] = set()  # methods (plain or Async.) found not audited
        self.pending: dict[str, dict] = {}  # task ref -> the entry of the Async call that made it

    def start(self, dispatcher, method: str, params) -> "_Entry | None":
        """Begin the entry for a call, or None if it is not audited."""
        if type(method) is not str or method in self._quiet:  # (most calls: the getters)
            return None
        if self.file is None:
            return None
        name = method[6:] if method.startswith("Async.") else method
        plan = self._plans.get(name)
        if plan is None:
            route = dispatcher.routes.get(name)
            if route is None:
                return None
            plan = self._plans[name] = self._plan(route.message)
        if plan is False:
            self._quiet.add(method)  # (a method of the model, plain or Async: a bounded set)
            return None
        takes_session, secret = plan
        entry = {"time": "", "user": "", "subject": "", "session": "", "originator": "",
                 "peer": peer.get(), "call": method}
        args = list(params) if type(params) is list else []
        if takes_session and args:
            ref = args.pop(0)
            row = dispatcher.app.store.tables["session"].get(ref) if type(ref) is str else None
            if row is not None:
                entry.update(user=row["auth_user_name"], subject=row["auth_user_sid"],
                             session=trackid(ref), originator=row["originator"])
        elif name.startswith("session.") and args:  # a login names its user
            entry["user"] = _short(args[0])
        entry["args"] = ["(hidden)" if i in secret else _short(a) for i, a in enumerate(args)]
        return _Entry(self, entry)

    @staticmethod
    def _plan(msg):
        if not audited(msg):
            return False
        params = msg.params[1:] if msg.takes_session else msg.params
        secret = {i for i, p in enumerate(params) if any(s in p.name.lower() for s in _SECRET_PARAMS)}
        if msg.cls == "secret":
            secret = set(range(len(params)))
        return msg.takes_session, frozenset(secret)

    def task_done(self, task: str, error: list | None, result=None) -> None:
        """An Async call's task ended (Tasks._settle): its entry is written with the outcome."""
        entry = self.pending.pop(task, None)
        if entry is not None:
            _outcome(entry, error, result)
            self.write(entry)

    def write(self, entry: dict) -> None:
        try:
            self.file.write(orjson.dumps(entry, default=str) + b"\n")
            self.file.flush()
        except (OSError, ValueError):
            log.exception("cannot write the audit log %s", self.path)

    def close(self) -> None:
        for entry in self.pending.values():  # tasks the stop cut short
            entry["outcome"] = "pending"
            entry["time"] = _now()
            self.write(entry)
        self.pending.clear()
        if self.file:
            self.file.close()
            self.file = None


class _Entry:
    __slots__ = ("audit", "entry")

    def __init__(self, audit: Audit, entry: dict):
        self.audit, self.entry = audit, entry

    def finish(self, error: BaseException | None, result=None) -> None:
        e = self.entry
        if error is None and e["call"].startswith("Async."):
            e["task"] = result  # written when the task ends (Audit.task_done)
            self.audit.pending[result] = e
            return
        if error is not None:
            error = error.description if isinstance(error, ApiError) else ["INTERNAL_ERROR"]
        _outcome(e, error, result)
        self.audit.write(e)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _outcome(e: dict, error: list | None, result) -> None:
    e["time"] = _now()
    if error is None:
        e["outcome"] = "success"
        if type(result) is str and result.startswith("OpaqueRef:") and "session." not in e["call"]:
            e["result"] = result  # the object made
    else:
        e["outcome"] = "failure"
        e["error"] = error


def _short(value):
    """An argument as logged: plain JSON values, long strings cut."""
    if type(value) is str:
        return value if len(value) <= _MAX_ARG else value[:_MAX_ARG] + "…"
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    text = orjson.dumps(value, default=str).decode()
    return value if len(text) <= _MAX_ARG else text[:_MAX_ARG] + "…"
