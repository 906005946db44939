"""event.*: event.from (the live view every client keeps), inject, get_current_id, and the
legacy register / unregister / next.

Events are read from the store's change log (`store.changes`: one entry per object, stamped
with the generation of its last write) rather than queued per client: a reply holds one event
per changed object with its current record, as xapi's event.from does. A parked call waits on
the store for writes to the classes (or objects) it subscribed to, so parked clients cost
nothing until something they asked for changes.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ..errors import ApiError
from ..wire import Shared
from .registry import action

# Classes whose objects never produce events, as in xapi (session refs are secrets).
NO_EVENTS = frozenset({"session", "VTPM"})
MAX_TIMEOUT = 1e6  # seconds; longer waits would overflow the event loop's timers


@dataclass(frozen=True, slots=True, eq=False)
class Subs:
    """Parsed subscriptions: whole classes, single objects, or everything. Compared by
    identity: parse_subs hands out one object per distinct list of specs, so the replies
    shared between watchers (_shared) are found by a cheap look-up."""
    all: bool
    classes: frozenset  # model class names
    objects: frozenset  # (model class name, ref)

    def wants(self, cls: str, ref: str) -> bool:
        return self.all or cls in self.classes or (cls, ref) in self.objects

    def wake_keys(self, session: str):
        """What the store should wake us for; a logout wakes us too (SESSION_INVALID)."""
        if self.all:
            return None
        return (*self.classes, *self.objects, ("session", session))

    def counted(self, store):
        if self.all:
            return [c for c in store.tables if c not in NO_EVENTS]
        return sorted(self.classes | {c for c, _ in self.objects})


_names_by_model: dict[int, dict[str, str]] = {}


def _class_names(store) -> dict[str, str]:
    """Lowercased class name -> the model's spelling."""
    names = _names_by_model.get(id(store.model))
    if names is None:
        names = _names_by_model[id(store.model)] = {c.lower(): c for c in store.tables}
    return names


_parsed: dict[tuple, Subs] = {}  # specs -> Subs (at most _MAX_PARSED kept)
_MAX_PARSED = 4096


def parse_subs(store, specs: list[str]) -> Subs:
    """`*`, a class name or `class/ref`, case-insensitive; an unknown class is an error."""
    key = (id(store.model), *specs)
    subs = _parsed.get(key)
    if subs is None:
        subs = _parse_subs(store, specs)
        if len(_parsed) < _MAX_PARSED:
            _parsed[key] = subs
    return subs


def _parse_subs(store, specs: list[str]) -> Subs:
    names = _class_names(store)
    every, classes, objects = False, set(), set()
    for spec in specs:
        if spec == "*":
            every = True
            continue
        cls, slash, ref = spec.partition("/")
        name = names.get(cls.lower())
        if name is None or (slash and not ref):
            raise ApiError("EVENT_SUBSCRIPTION_PARSE_FAILURE", spec)
        if slash:
            objects.add((name, ref))
        else:
            classes.add(name)
    return Subs(every, frozenset(classes), frozenset(objects))


def parse_token(token: str) -> int:
    """The database generation of a `"%020d,%020d"` token; -1 for "" (from the start)."""
    if token == "":
        return -1
    parts = token.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        gen, _messages = int(parts[0]), int(parts[1])
    except ValueError:
        raise ApiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token) from None
    return gen


def make_token(generation: int) -> str:
    return f"{generation:020d},{0:020d}"


def collect(store, subs: Subs, since: int, timestamp: str, after: int | None = None) -> list[dict]:
    """One event per wanted object changed after generation `since`, oldest first.

    An object created after `since` is an `add` (or nothing, if already deleted again);
    one deleted is a `del` without snapshot; otherwise a `mod` with its current record.
    `after` (>= since) skips a stretch already known to hold nothing wanted.
    """
    if 0 <= since < store.horizon:
        raise ApiError("EVENTS_LOST")
    events = []
    born = store.born
    for cls, ref, gen, op in store.changed_since(since if after is None else after):
        if cls in NO_EVENTS or not subs.wants(cls, ref):
            continue
        created_since = born.get((cls, ref), 0) > since
        ev = {"id": str(gen), "timestamp": timestamp, "class": cls.lower(), "ref": ref}
        if op == "del":
            if created_since:
                continue
            ev["operation"] = "del"
        else:
            ev["operation"] = "add" if created_since else "mod"
            ev["snapshot"] = store.record(cls, ref)
        events.append(ev)
    return events


async def _wait(ctx, subs: Subs, seen: int, timeout: float) -> bool:
    store = ctx.store
    woken = await store.wait_for_change(seen, timeout, subs.wake_keys(ctx.session))
    if ctx.session not in store.tables["session"]:
        raise ApiError("SESSION_INVALID", ctx.session)
    return woken


# The batches built in this loop turn, by what they depend on: the watchers one write wakes,
# with the same token and subscriptions, all get one reply instead of building it each (and,
# as a wire.Shared, it is encoded once per wire format too). When each was parked does not
# matter: what one skipped as holding nothing wanted holds nothing wanted for the others
# either. The watchers were all woken in one go, so their turns come before the callback
# that then drops these: a big reply (every object, for a client connecting) must not
# outlive its delivery.
_shared: dict = {}  # (store id, generation, token's generation, Subs) -> reply


@action("event.from", inline=True)
async def event_from(ctx, classes, token, timeout):
    store = ctx.store
    since = parse_token(token)
    subs = parse_subs(store, classes)
    timeout = min(timeout, MAX_TIMEOUT) if timeout > 0 else 0.0  # also turns NaN into 0
    deadline = time.monotonic() + timeout
    seen = since
    while True:
        key = (id(store), store.generation, since, subs)
        reply = _shared.get(key)
        if reply is not None:
            return reply
        events = collect(store, subs, since, "0.0", seen)
        seen = store.generation  # nothing wanted up to here: a wake-up walks only what follows
        if events:
            reply = Shared(_batch(store, subs, events, seen))
            if not _shared:
                asyncio.get_running_loop().call_soon(_shared.clear)
            _shared[key] = reply
            return reply
        left = deadline - time.monotonic()
        if left <= 0:
            return _batch(store, subs, events, seen)
        await _wait(ctx, subs, seen, left)


def _batch(store, subs: Subs, events: list, generation: int) -> dict:
    counts = {c.lower(): len(store.tables[c]) for c in subs.counted(store)}
    return {"events": events, "valid_ref_counts": counts, "token": make_token(generation)}


@action("event.inject")
def inject(ctx, cls, ref):
    """Touch an object (a `mod` event) and return a token just before that write."""
    store = ctx.store
    name = _class_names(store).get(cls.lower(), cls)
    if name not in store.tables or ref not in store.tables[name]:
        raise ApiError("HANDLE_INVALID", cls, ref)
    store.update(name, ref, {})
    return make_token(store.generation - 1)


@action("event.get_current_id")
def get_current_id(ctx):
    return ctx.store.generation


# ---- legacy event.register / event.next ---------------------------------------------------

@dataclass
class Registration:
    """A session's event.next subscription: what it wants and how far it has read."""
    specs: list = field(default_factory=list)
    seen: int = 0


_registrations: dict[str, Registration] = {}  # session ref -> Registration


def _registration(ctx) -> Registration:
    live = ctx.store.tables["session"]
    for dead in [s for s in _registrations if s not in live]:
        del _registrations[dead]
    reg = _registrations.get(ctx.session)
    if reg is None:
        reg = _registrations[ctx.session] = Registration(seen=ctx.store.generation)
    return reg


def _normal(spec: str) -> str:
    """A subscription as xapi compares them: the class part lowercased."""
    cls, slash, ref = spec.partition("/")
    return cls.lower() + slash + ref


@action("event.register")
def register(ctx, classes):
    parse_subs(ctx.store, classes)  # reject bad subscriptions now, not at event.next
    reg = _registration(ctx)
    new = [_normal(c) for c in classes]
    reg.specs = [*new, *(c for c in reg.specs if c not in new)]


@action("event.unregister")
def unregister(ctx, classes):
    reg = _registration(ctx)
    gone = {_normal(c) for c in classes}
    reg.specs = [c for c in reg.specs if c not in gone]


@action("event.next", inline=True)
async def next_events(ctx):
    """Block until something registered for changes; events since the last call."""
    reg = _registrations.get(ctx.session)
    if reg is None:
        raise ApiError("SESSION_NOT_REGISTERED", ctx.session)
    store = ctx.store
    while True:
        subs = parse_subs(store, reg.specs)
        events = collect(store, subs, reg.seen, f"{time.time():.6f}")
        reg.seen = store.generation
        if events:
            return events
        await _wait(ctx, subs, reg.seen, 3600.0)
        if _registrations.get(ctx.session) is not reg:
            raise ApiError("SESSION_NOT_REGISTERED", ctx.session)
