"""SQLite persistence: one table per class, rows as orjson blobs.

WAL mode: a committed transaction is in the log before the reply is sent, so a
call that returned Success survives `kill -9` of the server.
"""
from __future__ import annotations

import datetime as _dt
import pathlib
import sqlite3

import orjson

from ..model import Model
from ..model.types import Enum, Map, Prim, Ref, Set, Type
from .store import EMPTY_MAP, EMPTY_SET, copy_value


def _table(cls: str) -> str:
    return '"obj_' + cls.replace('"', "") + '"'


class SqlitePersistence:
    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS local_users (name TEXT PRIMARY KEY, hash TEXT NOT NULL,"
            " role TEXT NOT NULL DEFAULT 'pool-admin')"
        )
        self._known: set[str] = set()

    def _ensure(self, cls: str) -> None:
        if cls not in self._known:
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {_table(cls)} (ref TEXT PRIMARY KEY, data BLOB)")
            self._known.add(cls)

    def save(self, upserts, deletes, generation: int) -> None:
        db = self.db
        db.execute("BEGIN")
        try:
            for cls, ref, row in upserts:
                self._ensure(cls)
                db.execute(
                    f"INSERT OR REPLACE INTO {_table(cls)} (ref, data) VALUES (?, ?)",
                    (ref, orjson.dumps(row, default=_default)),
                )
            for cls, ref in deletes:
                self._ensure(cls)
                db.execute(f"DELETE FROM {_table(cls)} WHERE ref = ?", (ref,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(generation),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def load_all(self, model: Model):
        """Every stored row, as (class, ref, row), and the generation.

        Rows are loaded compact: equal strings met in many rows (refs, enum values, names)
        become one shared object, so do equal dates, and empty maps and sets are the store's
        shared empties (see store.EMPTY_MAP): with 10,000 VMs, 80 MB less than one object each.
        Each value touched costs time at start, so uuids (unique) and numbers (small) are not."""
        rows = []
        pool: dict[str, str] = {}
        dates: dict[str, _dt.datetime] = {}
        share, fromiso = pool.setdefault, _dt.datetime.fromisoformat
        for cls, c in model.classes.items():
            self._ensure(cls)
            stored = {n: f for n, f in c.fields.items() if n not in c.derived}
            defaults = {n: f.default for n, f in stored.items()}
            fields = defaults.keys()
            datetimes = [n for n, f in stored.items() if f.type == Prim("datetime")]
            strings = [n for n, f in stored.items() if _pooled(f.type) and n != "uuid"]
            containers = [n for n, f in stored.items() if isinstance(f.type, (Set, Map))]
            for ref, data in self.db.execute(f"SELECT ref, data FROM {_table(cls)} ORDER BY rowid"):
                row = orjson.loads(data)
                if row.keys() != fields:
                    # fields added to the model since the row was written take their default
                    row = {n: row[n] if n in row else copy_value(d) for n, d in defaults.items()}
                for n in strings:
                    v = row[n]
                    row[n] = share(v, v)
                for n in datetimes:
                    s = row[n]
                    if type(s) is str:
                        d = dates.get(s)
                        if d is None:
                            d = dates[s] = fromiso(s)
                        row[n] = d
                for n in containers:
                    v = row[n]
                    if not v:
                        row[n] = EMPTY_MAP if type(v) is dict else EMPTY_SET
                    elif type(v) is dict:
                        for k, x in v.items():
                            if type(x) is str:
                                v[k] = share(x, x)
                    elif type(v) is list:
                        v[:] = [share(x, x) if type(x) is str else x for x in v]
                # compact: orjson's dicts are about 40% larger; the ref is the one in other
                # rows' fields (pooled), so the tables' keys are no extra copies
                rows.append((cls, share(ref, ref), dict(row.items())))
        got = self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return rows, int(got[0]) if got else 0

    # ---- local users -------------------------------------------------------

    def get_user(self, name: str):
        return self.db.execute("SELECT name, hash, role FROM local_users WHERE name=?", (name,)).fetchone()

    def put_user(self, name: str, hash_: str, role: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO local_users VALUES (?, ?, ?)", (name, hash_, role))

    def users(self):
        return self.db.execute("SELECT name, role FROM local_users ORDER BY name").fetchall()

    def get_meta(self, key: str):
        got = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return got[0] if got else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self.db.close()


def _default(obj):
    if isinstance(obj, _dt.datetime):
        return obj.isoformat()
    raise TypeError(type(obj))


def _pooled(t) -> bool:
    """A field holding a string (a ref, an enum value, text)."""
    return isinstance(t, (Ref, Enum)) or t == Prim("string")


__all__ = ["SqlitePersistence", "Type"]
