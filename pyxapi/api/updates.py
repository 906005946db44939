"""Legacy updates: pool_update.* (introduced from a VDI holding an update image), pool_patch.*
(the older face of the same updates: every call is forwarded to its pool_update, as xapi
does) and host_patch.apply (deprecated).

xapi mounts the update VDI on the host (<update dir>/<VDI uuid>/vdi) and reads its
update.xml:

    <update name-label="XS82E001" uuid="…" version="1.0" key="RPM-GPG-KEY"
            after-apply-guidance="restartHost" installation-size="1048576">
      <name-description>…</name-description>
    </update>

with update.xml.asc and repodata/repomd.xml(.asc) beside it. The backends here keep no file
system inside a disk, so what a disk's file system holds, when it holds one, is the directory
<state dir>/update/<VDI uuid>/vdi: a disk without one is not an update image, as in xapi.
The signatures are looked for but not checked (no GPG keyring comes with this host).
Applying an update installs nothing: the host records it (host.updates, a host_patch row,
updates_requiring_reboot when it asks for a host restart).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from ..db.store import NULL, now
from ..errors import ApiError
from . import storage
from .registry import action

_GUIDANCE = ("restartHVM", "restartPV", "restartHost", "restartXAPI")
_NO_DOCUMENT = "missing update document (update.xml) in the package."


def image_dir(ctx, vdi_uuid: str):
    """Where the file system of the disk ``vdi_uuid`` is (None: the disk holds none)."""
    if ctx.app.state_dir is None:
        return None
    path = ctx.app.state_dir / "update" / vdi_uuid / "vdi"
    return path if path.is_dir() else None


def read_update_info(ctx, vdi: str) -> dict:
    """The update image's update.xml as pool_update fields; INVALID_UPDATE as xapi words it."""
    path = image_dir(ctx, ctx.store.get("VDI", vdi)["uuid"])
    try:
        root = ET.parse(path / "update.xml").getroot()
    except (TypeError, OSError, ET.ParseError):
        raise ApiError("INVALID_UPDATE", _NO_DOCUMENT) from None
    if root.tag != "update":
        raise ApiError("INVALID_UPDATE", "missing <update> in update.xml")
    attr = root.attrib
    for key in ("uuid", "name-label", "version"):
        if key not in attr:
            raise ApiError("INVALID_UPDATE", f"missing <{key}> in update.xml")
    descr = root.find("name-description")
    if descr is None:
        raise ApiError("INVALID_UPDATE", "missing <name-description> in update.xml")
    guidance = [g for g in attr.get("after-apply-guidance", "").split(",") if g]
    if any(g not in _GUIDANCE for g in guidance):
        guidance = []  # xapi drops guidance it cannot read
    try:
        size = int(attr.get("installation-size", "0"))
    except ValueError:
        size = 0
    for signed in ("update.xml.asc", "repodata/repomd.xml", "repodata/repomd.xml.asc"):
        if not (path / signed).is_file():
            raise ApiError("INVALID_UPDATE", "Invalid signature")
    return {"uuid": attr["uuid"], "name_label": attr["name-label"],
            "name_description": descr.text or "", "version": attr["version"],
            "key": attr.get("key", "").rsplit("/", 1)[-1], "installation_size": size,
            "after_apply_guidance": guidance,
            "enforce_homogeneity": attr.get("enforce-homogeneity", "").lower() == "true"}


def patch_uuid(update_uuid: str) -> str:
    """The pool_patch of an update: its uuid with bytes 4 to 7 zeroed (as xapi)."""
    parts = update_uuid.split("-")
    return "-".join([parts[0], "0000", "0000", *parts[3:]])


def patch_of(store, update: str) -> str:
    return next((p for p, row in store.tables["pool_patch"].items()
                 if row["pool_update"] == update), NULL)


@action("pool_update.introduce")
def introduce(ctx, vdi):
    store = ctx.store
    info = read_update_info(ctx, vdi)
    update = store.by_uuid("pool_update", info["uuid"])
    if update is not None:
        known = store.get("pool_update", update)["vdi"]
        if not store.exists("VDI", known):
            store.update("pool_update", update, {"vdi": vdi})
        elif known != vdi:
            raise ApiError("UPDATE_ALREADY_EXISTS", info["uuid"])
        return update
    update = store.create("pool_update", {**info, "vdi": vdi})
    store.create("pool_patch", {
        "uuid": patch_uuid(info["uuid"]), "name_label": info["name_label"],
        "name_description": info["name_description"], "version": info["version"],
        "size": info["installation_size"], "pool_applied": False,
        "after_apply_guidance": info["after_apply_guidance"], "pool_update": update,
        "other_config": {}})
    return update


def _assert_applicable(ctx, update: str, host: str) -> None:
    store = ctx.store
    if update in store.get("host", host)["updates"]:
        raise ApiError("UPDATE_ALREADY_APPLIED", update)
    vdi = store.get("pool_update", update)["vdi"]
    if not store.exists("VDI", vdi):  # cleaned from the pool: nothing left to apply
        raise ApiError("CANNOT_FIND_UPDATE")
    read_update_info(ctx, vdi)  # the image must still be a valid update


@action("pool_update.precheck")
def precheck(ctx, self, host):
    _assert_applicable(ctx, self, host)
    return "ok"  # nothing to patch live: no livepatch status to report


def apply_update(ctx, update: str, host: str) -> None:
    store = ctx.store
    _assert_applicable(ctx, update, host)
    row = store.get("host", host)
    changes = {"updates": [*row["updates"], update]}
    if "restartHost" in store.get("pool_update", update)["after_apply_guidance"]:
        changes["updates_requiring_reboot"] = [*row["updates_requiring_reboot"], update]
    store.update("host", host, changes)
    # a many-to-many pair: both sides are stored
    hosts = store.get("pool_update", update)["hosts"]
    store.update("pool_update", update, {"hosts": [*hosts, host]})
    patch = patch_of(store, update)
    if patch != NULL:
        store.create("host_patch", {"host": host, "pool_patch": patch, "applied": True,
                                    "timestamp_applied": now(), "name_label": "",
                                    "name_description": "", "version": "", "size": 0,
                                    "other_config": {}})


@action("pool_update.apply")
def apply(ctx, self, host):
    apply_update(ctx, self, host)


@action("pool_update.pool_apply")
def pool_apply(ctx, self):
    store = ctx.store
    todo = [h for h in store.refs("host") if self not in store.get("host", h)["updates"]]
    if not todo:
        raise ApiError("UPDATE_ALREADY_APPLIED_IN_POOL", self)
    failed = []
    for host in todo:
        try:
            apply_update(ctx, self, host)
        except ApiError:
            failed.append(host)
    if failed:
        raise ApiError("UPDATE_POOL_APPLY_FAILED", *failed)


@action("pool_update.pool_clean")
async def pool_clean(ctx, self):
    """The update image goes: the update stays known (and applied where it is)."""
    store = ctx.store
    vdi = store.get("pool_update", self)["vdi"]
    if not store.exists("VDI", vdi):
        raise ApiError("HANDLE_INVALID", "VDI", vdi)
    await storage.destroy_vdi(ctx, vdi)
    store.update("pool_update", self, {"vdi": NULL})


@action("pool_update.destroy")
def destroy(ctx, self):
    store = ctx.store
    if store.field("pool_update", self, "hosts"):
        raise ApiError("UPDATE_IS_APPLIED")
    patch = patch_of(store, self)
    store.destroy("pool_update", self)
    if patch != NULL:
        store.destroy("pool_patch", patch)


# ---- pool_patch: the same updates, by their old name -------------------------------------------

def _update_of(store, patch: str) -> str:
    update = store.get("pool_patch", patch)["pool_update"]
    if not store.exists("pool_update", update):
        raise ApiError("HANDLE_INVALID", "pool_update", update)
    return update


@action("pool_patch.precheck")
def patch_precheck(ctx, self, host):
    precheck(ctx, _update_of(ctx.store, self), host)
    return ""


@action("pool_patch.apply")
def patch_apply(ctx, self, host):
    apply_update(ctx, _update_of(ctx.store, self), host)
    return ""


@action("pool_patch.pool_apply")
def patch_pool_apply(ctx, self):
    update = _update_of(ctx.store, self)
    for host in ctx.store.refs("host"):
        apply_update(ctx, update, host)
    ctx.store.update("pool_patch", self, {"pool_applied": True})


@action("pool_patch.clean", "pool_patch.clean_on_host")
def patch_clean(ctx, self, host=None):
    """Nothing is kept per host for an update (xapi: a no-op too)."""


@action("pool_patch.pool_clean")
async def patch_pool_clean(ctx, self):
    await pool_clean(ctx, _update_of(ctx.store, self))


@action("pool_patch.destroy")
def patch_destroy(ctx, self):
    destroy(ctx, _update_of(ctx.store, self))


@action("host_patch.apply")
def host_patch_apply(ctx, self):
    raise ApiError("MESSAGE_DEPRECATED")
