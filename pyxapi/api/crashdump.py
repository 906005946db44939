"""Host crash dumps: host_crashdump rows kept in step with the crash directory, and
host_crashdump.upload / destroy.

As in xapi, a crash dump is a directory the crash kernel left in the crash directory (here
<state dir>/crash), named YYYYMMDD-HHMMSS-UTC; each start of the host resynchronises the rows
with the directories (new ones appear, vanished ones go). Which directory a row stands for is
kept in <crash dir>/.index (row uuid -> directory name).
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import shutil
import tarfile

from ..errors import ApiError
from .bootstrap import on_loop_start_hook
from .host import upload as http_upload
from .registry import action


def crash_dir(app):
    return app.state_dir / "crash" if app.state_dir else None


def _index(app) -> dict:
    try:
        return json.loads((crash_dir(app) / ".index").read_text())
    except (OSError, ValueError):
        return {}


def _save_index(app, index: dict) -> None:
    (crash_dir(app) / ".index").write_text(json.dumps(index))


def _size(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _timestamp(path) -> _dt.datetime:
    try:
        return _dt.datetime.strptime(path.name, "%Y%m%d-%H%M%S-UTC")
    except ValueError:
        return _dt.datetime.fromtimestamp(path.stat().st_ctime, _dt.UTC).replace(tzinfo=None)


def resynchronise(app) -> None:
    store, host, base = app.store, app.host_ref, crash_dir(app)
    if base is None:
        return
    base.mkdir(exist_ok=True)
    index = _index(app)
    present = {p.name: p for p in base.iterdir() if p.is_dir()}
    known = {}
    for ref in [r for r, row in store.tables["host_crashdump"].items() if row["host"] == host]:
        name = index.get(store.get("host_crashdump", ref)["uuid"])
        if name in present:
            known[name] = ref
        else:  # its directory has gone
            store.destroy("host_crashdump", ref)
    for name, path in present.items():
        if name not in known:
            ref = store.create("host_crashdump", {"host": host, "timestamp": _timestamp(path),
                                                  "size": _size(path), "other_config": {}})
            known[name] = ref
    _save_index(app, {store.get("host_crashdump", r)["uuid"]: n for n, r in known.items()})


@on_loop_start_hook
async def resync_at_start(app) -> None:
    resynchronise(app)


def _path(ctx, self):
    name = _index(ctx.app).get(ctx.store.get("host_crashdump", self)["uuid"])
    return crash_dir(ctx.app) / name if name else None


def _tar(path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        tar.add(path, arcname=path.name)
    return out.getvalue()


@action("host_crashdump.upload")
async def upload(ctx, self, url, options):
    path = _path(ctx, self)
    if url == "":
        raise ApiError("INVALID_VALUE", "url", "")
    if path is None or not path.is_dir():
        raise ApiError("INTERNAL_ERROR", "the crash dump's directory has gone")
    await http_upload(url, options, f"{path.name}.tar.gz", lambda: _tar(path))


@action("host_crashdump.destroy")
def destroy(ctx, self):
    path = _path(ctx, self)
    if path is not None and path.is_dir():
        shutil.rmtree(path)
    ctx.store.destroy("host_crashdump", self)
