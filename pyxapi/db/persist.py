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
from ..model.types import Prim, Type


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
        rows = []
        for cls, c in model.classes.items():
            self._ensure(cls)
            datetimes = [n for n, f in c.fields.items() if f.type == Prim("datetime")]
            defaults = {n: f.default for n, f in c.fields.items() if n not in c.derived}
            fields = defaults.keys()
            for ref, data in self.db.execute(f"SELECT ref, data FROM {_table(cls)}"):
                row = orjson.loads(data)
                for n in datetimes:
                    if isinstance(row.get(n), str):
                        row[n] = _dt.datetime.fromisoformat(row[n])
                if row.keys() == fields:
                    row = dict(row.items())  # compact: orjson's dicts are about 40% larger
                else:
                    # fields added to the model since the row was written take their default
                    row = {n: row[n] if n in row else _copy(d) for n, d in defaults.items()}
                rows.append((cls, ref, row))
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


def _copy(v):
    return list(v) if type(v) is list else dict(v) if type(v) is dict else v


__all__ = ["SqlitePersistence", "Type"]
