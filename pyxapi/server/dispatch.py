"""The one request pipeline:

    parse → look up → arity → session → RBAC → refs/types → handler → envelope

Routes are computed once from the data model at start. Errors of every step
are ApiErrors, turned into the envelope in one place (`Dispatcher.call`).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass

from ..api.generic import generic_handler
from ..api.registry import load_all
from ..errors import ApiError
from ..model import Message, Model
from ..model.nulls import accepts_null, check_table
from ..model.types import STRING, Ref
from ..model.values import NULL_REF, from_wire, type_default
from ..wire import Shared, jsonrpc, xmlrpc

log = logging.getLogger("pyxapi.dispatch")

# Classes whose messages have no Async form (the spec), plus event's long-polls.
NO_ASYNC_CLASSES = frozenset({"session", "task", "event"})
GENERATED_PREFIXES = ("get_", "set_", "add_", "remove_")


@dataclass(slots=True)
class Route:
    message: Message
    handler: object  # (ctx, args) -> value, or a coroutine function
    is_coroutine: bool
    async_ok: bool
    ref_checks: tuple  # (arg index, class, takes NULL) for each Ref parameter
    implemented: bool
    # worked out once, for the check every call makes
    permission: str = ""  # the RBAC permission: the wire name, lower case
    n_args: int = 0  # parameters after the session one
    plain: bool = False  # every such parameter a string or a ref: a str arrives as it is
    removed: bool = False

    def __post_init__(self):
        msg = self.message
        self.permission = msg.wire_name.lower()
        self.n_args = len(msg.params) - (1 if msg.takes_session else 0)
        self.plain = all(isinstance(p.type, Ref) or p.type == STRING
                         for p in msg.params[1 if msg.takes_session else 0:])
        self.removed = msg.state == "Removed_s"


class Context:
    """What a handler sees of the server for one call."""

    __slots__ = ("app", "store", "backend", "session", "task", "message")

    def __init__(self, app, session, task=None, message=None):
        self.app = app
        self.store = app.store
        self.backend = app.backend
        self.session = session
        self.task = task
        self.message = message

    @property
    def user(self) -> str:
        return self.store.get("session", self.session)["auth_user_name"] if self.session else ""

    def progress(self, fraction: float) -> None:
        if self.task:
            self.app.tasks.set_progress(self.task, fraction)


def build_routes(model: Model) -> dict[str, Route]:
    actions = load_all()
    check_table(model)
    routes = {}
    for c in model.classes.values():
        for msg in c.messages.values():
            name = msg.wire_name
            fn = actions.get(name)
            if fn is not None:
                handler, is_coro = _adapt(fn), inspect.iscoroutinefunction(fn)
                if is_coro and not fn.inline:
                    handler = _in_own_task(handler)
                implemented = True
            else:
                handler = generic_handler(c, msg)
                is_coro = False
                implemented = handler is not None
                if handler is None:
                    handler = _not_implemented(name)
            start = 1 if msg.takes_session else 0
            ref_checks = tuple(
                (i - start, p.type.cls, accepts_null(model, msg, p))
                for i, p in enumerate(msg.params)
                if i >= start and isinstance(p.type, Ref)
            )
            async_ok = c.name not in NO_ASYNC_CLASSES and not (
                msg.implicit and msg.name.startswith(GENERATED_PREFIXES)
            )
            routes[name] = Route(msg, handler, is_coro, async_ok, ref_checks, implemented)
    unknown = set(actions) - set(routes)
    if unknown:
        raise RuntimeError(f"actions for messages the model does not have: {sorted(unknown)}")
    return routes


def _adapt(fn):
    """(ctx, args) → fn(ctx, *args): for a coroutine function, the coroutine itself (no
    coroutine level of its own between the pipeline and the action)."""
    return lambda ctx, args: fn(ctx, *args)


def _in_own_task(call):
    """The action as a task of its own. A request's first steps run in the connection's
    callbacks, outside any task (server/http.py), where libraries that look up the current
    task (httpx through anyio) would fail."""
    def start(ctx, args):
        return asyncio.get_running_loop().create_task(call(ctx, args))
    return start


def _not_implemented(name):
    def handler(ctx, args):
        raise ApiError("NOT_IMPLEMENTED", name)
    return handler


class Dispatcher:
    def __init__(self, app):
        self.app = app
        self.routes = build_routes(app.model)

    # ---- the pipeline ------------------------------------------------------

    async def call(self, method: str, params: list, *, originator: str | None = None):
        """Run one call; returns the result value or raises ApiError.
        State-changing calls are written to the audit log, whatever their outcome."""
        entry = self.app.audit.start(self, method, params)
        try:
            if method == "system.listMethods":  # introspection, no session (Xen Orchestra uses it)
                result = self.list_methods()
            else:
                route, session, args, is_async = self._prepare(method, params)
                if is_async:
                    result = self.app.tasks.start_async(route, session, args)
                else:
                    store = self.app.store
                    try:
                        result = route.handler(Context(self.app, session, None, route.message), args)
                        if route.is_coroutine:
                            result = await result
                    finally:
                        if store.dirty:  # durable before the reply leaves; one commit per burst
                            await store.durable()
        except Exception as e:
            if entry is not None:
                entry.finish(e)
            raise
        if entry is not None:
            entry.finish(None, result)
        return result

    def _prepare(self, method: str, params: list):
        """Every check before the handler: (route, session, converted args, is_async).
        A plain function, not a coroutine: most calls never wait, and each coroutine level
        on the way costs every call."""
        route, is_async = self._look_up(method)
        msg = route.message
        if msg.takes_session:
            if len(params) != route.n_args + 1:
                self._check_arity(method, msg, params)
            session = self.app.sessions.check(params[0], route.permission)
            params = params[1:]
            start = 1
        else:
            if len(params) != route.n_args:
                self._check_arity(method, msg, params)
            session = None
            start = 0
        if route.plain and len(params) == route.n_args:
            for v in params:  # (most calls: strings and refs, as they came)
                if type(v) is not str:
                    params = self._convert(msg, params, start)
                    break
            args = params
        else:
            args = self._convert(msg, params, start)
        store = self.app.store
        for i, cls, null_ok in route.ref_checks:  # NULL only where the call means "none"
            ref = args[i] if i < len(args) else NULL_REF
            if ref not in store.tables.get(cls, ()) and not (null_ok and ref == NULL_REF):
                if cls in store.tables:
                    raise ApiError("HANDLE_INVALID", cls, ref)
        return route, session, args, is_async

    def list_methods(self) -> list[str]:
        names = [n for n, r in self.routes.items() if not r.removed]
        return sorted(names) + ["system.listMethods"]

    def _look_up(self, method: str):
        route = self.routes.get(method)
        is_async = route is None and method.startswith("Async.")
        if is_async:
            route = self.routes.get(method[6:])
        if route is None or (is_async and not route.async_ok):
            raise ApiError("MESSAGE_METHOD_UNKNOWN", method)
        if route.removed:
            raise ApiError("MESSAGE_REMOVED")
        return route, is_async

    @staticmethod
    def _check_arity(method, msg: Message, params: list):
        n = len(params)
        total = len(msg.params)
        if n == total:  # (most calls: no need to count the required ones)
            return
        required = sum(1 for p in msg.params if p.required)
        if n < required or n > total:
            raise ApiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, total, n)

    @staticmethod
    def _convert(msg: Message, params: list, start: int) -> list:
        out = []
        for p, v in zip(msg.params[start:], params):
            out.append(from_wire(p.type, v, p.name))
        # optional trailing params take their type's default
        for p in msg.params[start + len(params):]:
            out.append(type_default(p.type))
        return out

    # ---- envelopes -----------------------------------------------------------

    async def handle_xmlrpc(self, body: bytes) -> bytes:
        try:
            method, params = xmlrpc.parse_call(body)
        except xmlrpc.WireError as e:
            return xmlrpc.fault(-32700, f"parse error: {e}")
        try:
            result = await self.call(method, params)
            if type(result) is Shared:  # the same bytes for every call that returns it
                if result.xml is None:
                    result.xml = xmlrpc.success(dict(result))
                return result.xml
            return xmlrpc.success(result)
        except ApiError as e:
            return xmlrpc.failure(e.description)
        except Exception as e:  # never a traceback on the wire
            return xmlrpc.failure(self._internal(method, e).description)

    async def handle_jsonrpc(self, body: bytes) -> bytes:
        try:
            method, params, id_, version = jsonrpc.parse_call(body)
        except jsonrpc.WireError as e:
            return jsonrpc.protocol_error(str(e), e.id, e.version, e.code)
        try:
            result = await self.call(method, params)
            if type(result) is Shared:  # encoded once and embedded, from its second call on
                if result.json is None:  # (the first as usual: a reply to one call only, maybe
                    result.json = False  # huge, is not held encoded twice)
                else:
                    if result.json is False:
                        result.json = jsonrpc.fragment(dict(result))
                    result = result.json
            return jsonrpc.success(result, id_, version)
        except ApiError as e:
            return jsonrpc.failure(e.description, id_, version)
        except Exception as e:
            return jsonrpc.failure(self._internal(method, e).description, id_, version)

    @staticmethod
    def _internal(method: str, e: Exception) -> ApiError:
        if isinstance(e, asyncio.CancelledError):
            raise e
        log.exception("internal error in %s", method)
        return ApiError("INTERNAL_ERROR", f"{type(e).__name__}: {e}")
