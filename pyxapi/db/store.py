"""The object store: one table per class, one write path.

Rows hold the stored fields of an object. A `Set(Ref)` field that mirrors a
`Ref` field on another class (VM.VBDs ↔ VBD.VM) is not stored: it is kept in
an index that the write path updates, so both sides always agree.

Every write goes through `_write`, which stamps a generation (for event.from),
marks the row dirty (for persistence) and wakes event waiters.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import gc
import logging
import uuid as _uuid
from collections import defaultdict
from contextvars import ContextVar

from ..errors import ApiError
from ..model import Model
from ..model.values import NULL_REF
from . import memory

NULL = NULL_REF
log = logging.getLogger("pyxapi.store")

# Every row holding an empty map or set holds one of these (most maps and sets are empty:
# they were a third of a big store's memory). Sharing is safe because values are never
# edited in place: a write gives a field a new value (`update`). Were one edited anyway,
# `update` and `commit` take the edit off the shared value, so no other row shows it.
EMPTY_MAP: dict = {}
EMPTY_SET: list = []

# Classes whose rows live in memory only, as in xapi: a restart ends every session, so
# logins and the sessions' activity stamps cost no commit. A delete is still written, so
# that rows stored by an older version go.
NOT_PERSISTED = frozenset({"session"})

# Records built (the bulk of a big reply) after which freed memory is given back.
TRIM_AFTER_RECORDS = 10_000


class Journal(list):
    """The store writes of one Async task, for undo. Closed when the task ends, so that
    background tasks it spawned (which inherit its context) do not keep filling it."""
    open = True


# The undo journal of the Async task running in this asyncio context (see Store.undo).
journal: ContextVar[Journal | None] = ContextVar("store_journal", default=None)


def new_ref() -> str:
    return f"OpaqueRef:{_uuid.uuid4()}"


def new_uuid() -> str:
    return str(_uuid.uuid4())


class Store:
    def __init__(self, model: Model, persistence=None):
        self.model = model
        self.persistence = persistence
        self.tables: dict[str, dict[str, dict]] = {name: {} for name in model.classes}
        self.uuids: dict[str, dict[str, str]] = {name: {} for name in model.classes}
        # (class, derived set field) -> {target ref -> [refs pointing at it]}
        self.derived: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(dict)
        self._derived_of: dict[str, list] = {}  # class -> [(derived field, its index)], for record()
        self.generation = 0
        # (class, ref) -> (generation, operation), oldest first: what event.from reads
        self.changes: dict[tuple[str, str], tuple[int, str]] = {}
        # (class, ref) -> generation of its creation, kept with its `changes` entry, so that
        # event.from can tell "created since your token" (an add, or nothing if also deleted);
        # none for the rows loaded at start, whose creation counts as generation 0
        self.born: dict[tuple[str, str], int] = {}
        # changes at or below this generation may be forgotten (tombstones pruned, or from
        # before a restart): a reader from an older token has lost events
        self.horizon = 0
        self.dirty: dict[tuple[str, str], str] = {}
        # parked event readers: a class name or (class, ref) -> futures to wake on a write there
        self._waiters: dict[object, set[asyncio.Future]] = {}
        self._to_wake: set = set()  # keys of _waiters written to since the last wake-up pass
        self._flush_scheduled = False
        self._durable_waiters: list[asyncio.Future] = []  # replies held until the next commit
        self._records_built = 0  # since memory was last trimmed

    # ---- reads -------------------------------------------------------------

    def exists(self, cls: str, ref: str) -> bool:
        return ref in self.tables[cls]

    def get(self, cls: str, ref: str) -> dict:
        try:
            return self.tables[cls][ref]
        except KeyError:
            raise ApiError("HANDLE_INVALID", cls, ref) from None

    def refs(self, cls: str) -> list[str]:
        return list(self.tables[cls])

    def by_uuid(self, cls: str, uuid: str) -> str | None:
        return self.uuids[cls].get(uuid)

    def find(self, cls: str, **match) -> list[str]:
        return [r for r, row in self.tables[cls].items() if all(row.get(k) == v for k, v in match.items())]

    def field(self, cls: str, ref: str, name: str):
        """One field, derived sets included."""
        pair = self.model.classes[cls].derived.get(name)
        if pair is not None:
            self.get(cls, ref)
            return list(self.derived[(cls, name)].get(ref, ()))
        return self.get(cls, ref)[name]

    def record(self, cls: str, ref: str) -> dict:
        row = self.get(cls, ref)
        indexes = self._derived_of.get(cls)
        if indexes is None:  # the class's derived-set indexes, looked up once
            indexes = self._derived_of[cls] = [(name, self.derived[(cls, name)])
                                               for name in self.model.classes[cls].derived]
        rec = dict(row)
        for name, index in indexes:
            refs = index.get(ref)
            rec[name] = list(refs) if refs else []
        self._records_built += 1
        if self._records_built == TRIM_AFTER_RECORDS:  # once: the count restarts at the trim
            self._trim_soon()
        return rec

    def _trim_soon(self) -> None:
        """Give a big reply's memory back once it is sent: two loop turns on, after the
        callbacks queued by the call that built it (event.from drops its shared reply in one)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon(loop.call_soon, self._trim)

    def _trim(self) -> None:
        self._records_built = 0
        memory.trim()

    # ---- writes ------------------------------------------------------------

    def create(self, cls: str, fields: dict | None = None, ref: str | None = None) -> str:
        c = self.model.classes[cls]
        ref = ref or new_ref()
        row = {}
        fields = fields or {}
        for name, f in c.fields.items():
            if name in c.derived:
                continue
            value = fields[name] if name in fields else f.default
            row[name] = copy_value(value)
        if c.has_uuid:
            if not row.get("uuid"):
                row["uuid"] = new_uuid()
            elif row["uuid"] in self.uuids[cls]:
                raise ApiError("DB_UNIQUENESS_CONSTRAINT_VIOLATION", cls, "uuid", row["uuid"])
            self.uuids[cls][row["uuid"]] = ref
        self._note(cls, ref, None)
        self.tables[cls][ref] = row
        self._write(cls, ref, "add")
        for name, (other, other_field) in c.links.items():
            self._link(cls, ref, name, None, row[name])
        return ref

    def update(self, cls: str, ref: str, changes: dict) -> None:
        row = self.get(cls, ref)
        unknown = [k for k in changes if k not in row]
        if unknown:  # a field the model does not have (or a derived set): a bug in the caller
            raise ValueError(f"{cls} has no stored field {', '.join(unknown)}")
        if journal.get() is not None:
            self._note(cls, ref, {k: row[k] for k in changes if k in row})
        links = self.model.classes[cls].links
        for name, value in changes.items():
            if (value is EMPTY_MAP or value is EMPTY_SET) and value:
                value = _unshare(value)  # edited in place, then written: this row's edit only
            old = row.get(name)
            if name == "uuid" and value != old:
                self.uuids[cls].pop(old, None)
                self.uuids[cls][value] = ref
            row[name] = value
            if name in links and old != value:
                self._link(cls, ref, name, old, value)
        self._write(cls, ref, "mod")

    def destroy(self, cls: str, ref: str) -> None:
        row = self.get(cls, ref)
        self._note(cls, ref, row)
        c = self.model.classes[cls]
        for name in c.links:
            self._link(cls, ref, name, row[name], None)
        for name in c.derived:
            self.derived[(cls, name)].pop(ref, None)
        del self.tables[cls][ref]
        if c.has_uuid:
            self.uuids[cls].pop(row.get("uuid"), None)
        self._write(cls, ref, "del")

    def _note(self, cls: str, ref: str, before: dict | None) -> None:
        """Journal a write for undo: `before` is None for a creation (tasks keep their rows)."""
        entries = journal.get()
        if entries is not None and entries.open and cls != "task":
            entries.append((cls, ref, before))

    def undo(self, entries: list) -> None:
        """Roll back journalled writes, newest first: a cancelled task leaves nothing half-made."""
        token = journal.set(None)
        try:
            for cls, ref, before in reversed(entries):
                alive = ref in self.tables[cls]
                if before is None:
                    if alive:
                        self.destroy(cls, ref)
                elif not alive:
                    self.create(cls, before, ref)
                else:
                    self.update(cls, ref, before)
        finally:
            journal.reset(token)

    def _link(self, cls, ref, name, old, new):
        other, other_field = self.model.classes[cls].links[name]
        index = self.derived[(other, other_field)]
        if old and old != NULL and old in index:
            try:
                index[old].remove(ref)
            except ValueError:
                pass
            if old in self.tables[other]:
                self._write(other, old, "mod", persist=False)
        if new and new != NULL:
            index.setdefault(new, []).append(ref)
            if new in self.tables[other]:
                self._write(other, new, "mod", persist=False)

    def _write(self, cls: str, ref: str, op: str, persist: bool = True) -> None:
        self.generation += 1
        key = (cls, ref)
        if op == "add":
            self.born[key] = self.generation
        prev = self.changes.pop(key, None)
        if prev and prev[1] == "add" and op == "mod":
            op = "add"  # not yet seen by anyone reading from before its creation
        self.changes[key] = (self.generation, op)
        if op == "del" or (persist and cls not in NOT_PERSISTED):
            self.dirty[key] = op
        if self.persistence is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.commit)
            except RuntimeError:
                self._flush_scheduled = False
        # The readers are woken in one pass after the commit (queued first: they find the write
        # durable and answer at once, instead of each parking again on `durable()`), so a write
        # costs a set insertion per reader key, and its own reply is queued before theirs.
        waiters = self._waiters
        if waiters:
            hit = [k for k in (None, cls, key) if k in waiters]
            if hit:
                if not self._to_wake:
                    asyncio.get_running_loop().call_soon(self._wake)
                self._to_wake.update(hit)

    # ---- events ------------------------------------------------------------

    def changed_since(self, generation: int):
        """(class, ref, generation, op) of every object changed after `generation`, oldest first."""
        out = []
        for key in reversed(self.changes):
            gen, op = self.changes[key]
            if gen <= generation:
                break
            out.append((key[0], key[1], gen, op))
        out.reverse()
        return out

    async def wait_for_change(self, generation: int, timeout: float, keys=None) -> bool:
        """Wait until a write after `generation` (to one of `keys`: class names or
        (class, ref) pairs, when given) or `timeout` seconds; True if woken by a write.

        A parked reader costs one future and one timer; only writes to its keys wake it."""
        if keys is None and self.generation > generation:
            return True
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        keys = (None,) if keys is None else keys
        for k in keys:
            self._waiters.setdefault(k, set()).add(fut)
        timer = loop.call_later(max(timeout, 0.0), _resolve, fut, False)
        try:
            return await fut
        finally:
            timer.cancel()
            for k in keys:
                waiting = self._waiters.get(k)
                if waiting is not None:
                    waiting.discard(fut)
                    if not waiting:
                        del self._waiters[k]

    def _wake(self) -> None:
        """Wake every reader waiting on a key written to since the last pass."""
        keys, self._to_wake = self._to_wake, set()
        for k in keys:
            for fut in self._waiters.pop(k, ()):  # they each leave their other keys' sets
                _resolve(fut, True)

    def prune_changes(self, keep: int = 100_000) -> None:
        """Forget tombstones beyond the last `keep` changes (live objects stay)."""
        excess = len(self.changes) - keep
        for key in list(self.changes)[: max(excess, 0)]:
            gen, op = self.changes[key]
            if op == "del":
                del self.changes[key]
                self.born.pop(key, None)
                self.horizon = max(self.horizon, gen)

    # ---- persistence -------------------------------------------------------

    def commit(self) -> None:
        """Write dirty rows to the persistence layer (one transaction)."""
        self._flush_scheduled = False
        waiters, self._durable_waiters = self._durable_waiters, []
        if EMPTY_MAP or EMPTY_SET:  # edited in place and never written: a bug, undone
            log.error("a shared empty map or set was edited in place; edit dropped: %r %r",
                      EMPTY_MAP, EMPTY_SET)
            EMPTY_MAP.clear()
            EMPTY_SET.clear()
        if not self.dirty or self.persistence is None:
            self.dirty.clear()
            _resolve_all(waiters, None)
            return
        dirty, self.dirty = self.dirty, {}
        upserts, deletes = [], []
        for (cls, ref), op in dirty.items():
            row = self.tables[cls].get(ref)
            if row is None:
                deletes.append((cls, ref))
            else:
                upserts.append((cls, ref, row))
        try:
            self.persistence.save(upserts, deletes, self.generation)
        except BaseException as e:
            self.dirty = {**dirty, **self.dirty}  # still to be written
            _resolve_all(waiters, e)
            raise
        _resolve_all(waiters, None)

    async def durable(self) -> None:
        """Return once every write made so far is committed.

        The commit runs from the event loop (scheduled by `_write`), after every call
        that was ready in the same loop iteration has made its writes: a burst of
        concurrent writes costs one transaction, and none of their replies leaves
        before it. A failed commit fails the waiting calls."""
        if not self.dirty:
            return
        fut = asyncio.get_running_loop().create_future()
        self._durable_waiters.append(fut)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.commit)
        await fut

    def load(self) -> None:
        """Fill the tables from persistence, rebuilding indexes."""
        if self.persistence is None:
            return
        memory.tune()  # before the tables fill: see memory.tune
        # The rows hold no reference cycles: collecting while building them is wasted work
        # (it was a third of a restart with 10,000 VMs), and once loaded they live as long
        # as the server, so they are frozen out of every later collection too.
        gc.disable()
        try:
            self._load()
        finally:
            gc.enable()
        gc.freeze()

    def _load(self) -> None:
        rows, generation = self.persistence.load_all(self.model)
        for cls, ref, row in rows:
            self.tables[cls][ref] = row
            if "uuid" in row:
                self.uuids[cls][row["uuid"]] = ref
        changes = self.changes
        for cls, table in self.tables.items():
            links = [(name, self.derived[pair]) for name, pair in self.model.classes[cls].links.items()]
            for ref, row in table.items():
                for name, index in links:
                    target = row.get(name)
                    if target and target != NULL:
                        index.setdefault(target, []).append(ref)
                changes[(cls, ref)] = (0, "add")
        self.generation = generation
        self.horizon = generation  # what was deleted before the restart is not known


def _resolve_all(futures, error) -> None:
    for f in futures:
        if not f.done():
            if error is None:
                f.set_result(None)
            else:
                f.set_exception(error)


def copy_value(value):
    """A row's own copy of a map or set (the shared one when empty)."""
    if type(value) is list:
        return list(value) if value else EMPTY_SET
    if type(value) is dict:
        return dict(value) if value else EMPTY_MAP
    return value


def _unshare(shared):
    """A copy of what was put in a shared empty value, which is emptied again."""
    value = shared.copy()
    shared.clear()
    return value


def _resolve(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None, microsecond=0)
