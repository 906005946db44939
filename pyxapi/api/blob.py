"""Binary blobs: blob.create, <Class>.create_new_blob, blob.destroy and the /blob HTTP handler.

A blob row holds the metadata (mime_type, size, last_updated, public); its bytes live in a file
named by the blob's uuid under <state dir>/blobs (in memory when the server has no state dir).
Clients write and read them with HTTP PUT/GET /blob?ref=… (or uuid=…) and a session_id, as
with xapi; a public blob can be read without a session.
"""
from __future__ import annotations

import os
import urllib.parse

from ..db.store import now
from ..errors import ApiError
from ..model import load as load_model
from ..model.values import EPOCH
from .registry import action


def new_blob(store, mime_type: str, public: bool) -> str:
    return store.create("blob", {"mime_type": mime_type or "application/octet-stream",
                                 "public": public, "size": 0, "last_updated": EPOCH,
                                 "name_label": "", "name_description": ""})


@action("blob.create")
def create(ctx, mime_type, public):
    return new_blob(ctx.store, mime_type, public)


def _create_new_blob(cls: str):
    def handler(ctx, obj, name, mime_type, public):
        """A new blob kept in the object's `blobs` map under ``name``."""
        store = ctx.store
        blobs = store.get(cls, obj)["blobs"]
        if name in blobs:  # checked first: a failed call leaves no orphan blob behind
            raise ApiError("MAP_DUPLICATE_KEY", cls, "blobs", store.get(cls, obj)["uuid"], name)
        blob = new_blob(store, mime_type, public)
        store.update(cls, obj, {"blobs": {**blobs, name: blob}})
        return blob

    return handler


# every class of the model that offers create_new_blob (pool, VM, host, network, SR)
BLOB_OWNERS = [c.name for c in load_model().classes.values() if "create_new_blob" in c.messages]
for _cls in BLOB_OWNERS:
    action(f"{_cls}.create_new_blob")(_create_new_blob(_cls))


@action("blob.destroy")
def destroy(ctx, blob):
    """The row, its bytes, and the entries naming it in any object's `blobs` map."""
    store = ctx.store
    for cls in BLOB_OWNERS:
        for ref, row in store.tables[cls].items():
            if blob in row["blobs"].values():
                store.update(cls, ref, {"blobs": {k: v for k, v in row["blobs"].items()
                                                  if v != blob}})
    uuid = store.get("blob", blob)["uuid"]
    store.destroy("blob", blob)
    _Content(ctx.app).remove(uuid)


class _Content:
    """Where blob bytes are kept: files under the state dir, or a dict on the app."""

    def __init__(self, app):
        self.dir = app.state_dir / "blobs" if app.state_dir else None
        self.mem = app.__dict__.setdefault("blob_bytes", {})

    def read(self, uuid: str) -> bytes | None:
        if self.dir is None:
            return self.mem.get(uuid)
        try:
            return (self.dir / uuid).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, uuid: str, data: bytes) -> None:
        if self.dir is None:
            self.mem[uuid] = data
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / (uuid + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / uuid)

    def remove(self, uuid: str) -> None:
        if self.dir is None:
            self.mem.pop(uuid, None)
        else:
            (self.dir / uuid).unlink(missing_ok=True)


async def serve(app, method: str, query: bytes, body: bytes) -> tuple[int, bytes, bytes]:
    """GET/PUT /blob: (status, content type, body)."""
    q = dict(urllib.parse.parse_qsl(query.decode("latin-1")))
    store = app.store
    if "ref" not in q and "uuid" not in q:
        return 400, b"text/plain", b"blob request lacks a 'ref' or 'uuid' parameter\n"
    blob = q.get("ref")
    if blob is None or not store.exists("blob", blob):
        blob = store.by_uuid("blob", q.get("uuid", ""))
    if blob is None:
        return 404, b"text/plain", b"Unknown reference\n"
    row = store.get("blob", blob)
    if method not in ("GET", "HEAD", "PUT"):
        return 405, b"text/plain", b"method not allowed\n"
    if not (row["public"] and method in ("GET", "HEAD")):
        try:
            session = app.sessions.check(q.get("session_id", ""))
        except ApiError:
            return 401, b"text/plain", b"a valid session_id is required\n"
        if method == "PUT":  # writing needs the rights of making a blob (xapi: VM power admin)
            try:
                app.sessions.check(session, app.dispatcher.routes["VM.create_new_blob"].permission)
            except ApiError as e:
                return 403, b"text/plain", ("%s %s\n" % (e.code, " ".join(e.params))).encode()
    content = _Content(app)
    if method == "PUT":
        content.write(row["uuid"], body)
        store.update("blob", blob, {"size": len(body), "last_updated": now()})
        await store.durable()
        return 200, b"text/plain", b""
    data = content.read(row["uuid"])
    if data is None:
        return 404, b"text/plain", b"blob has no content\n"
    return 200, row["mime_type"].encode("latin-1", "replace"), data
