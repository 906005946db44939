"""Storage of the QEMU backend: SRs are directories of image files.

* "file" (also accepted as "ext"): a directory; each VDI is a qcow2 file and its ``location`` is
  the file name.  Clones and snapshots share a hidden read-only base (``.base-<uuid>.qcow2``)
  through qcow2 backing files; bases nobody refers to any more are deleted.
* "iso": a directory of ``.iso`` files, read only; ``location`` is the file name.

What qcow2 cannot hold (VDI type, read-only/sharable flags, suspend images, whose content is a
raw QEMU migration stream) is kept in ``.pyxapi.json`` inside the SR directory.  Scans read the
qcow2 headers themselves (virtual size and backing file), so they cost no subprocess per file.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import struct
import uuid as _uuid
from pathlib import Path
from typing import Optional

from pyxapi.backends.base import (
    BackendError, InsufficientSpace, NoSuchVDI, Progress, SrInfo, VdiInfo, report, round_up,
)

FILE_TYPES = ("file", "ext")
ISO_TYPES = ("iso",)
SR_TYPES = FILE_TYPES + ISO_TYPES
META = ".pyxapi.json"
QCOW2_MAGIC = b"QFI\xfb"
SECTOR = 512
CLUSTER = 64 * 1024


def qcow2_header(path: Path) -> Optional[tuple[int, str]]:
    """(virtual size, backing file name or "") of a qcow2 file; None if it is not qcow2."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if len(head) < 32 or head[:4] != QCOW2_MAGIC:
                return None
            backing_offset, backing_len, size = struct.unpack(">QIxxxxQ", head[8:32])
            backing = ""
            if backing_offset and backing_len:
                f.seek(backing_offset)
                backing = f.read(backing_len).decode("utf-8", "replace")
            return size, backing
    except OSError:
        return None


def allocated(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0


async def run(*argv: str, progress: Progress = None) -> str:
    """Run a tool (qemu-img) and return its stdout; SR_BACKEND_FAILURE if it fails.
    With ``progress``, parses qemu-img's ``-p`` output "(12.34/100%)"."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        if progress is None:
            out, err = await proc.communicate()
        else:
            chunks = []
            err_task = asyncio.ensure_future(proc.stderr.read())
            while True:
                data = await proc.stdout.read(256)
                if not data:
                    break
                chunks.append(data)
                for m in re.finditer(rb"\((\d+(?:\.\d+)?)/100%\)", data):
                    await report(progress, float(m.group(1)) / 100)
            err = await err_task
            await proc.wait()
            out = b"".join(chunks)
    except BaseException:
        if proc.returncode is None:          # cancelled: do not leave the tool running
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise BackendError("SR_BACKEND_FAILURE", proc.returncode, out.decode(errors="replace"),
                           err.decode(errors="replace").strip())
    return out.decode(errors="replace")


class DirSR:
    """One attached SR: a directory and its metadata file."""

    def __init__(self, uuid: str, type_: str, path: Path, physical_size: int = 0):
        self.uuid = uuid
        self.type = type_
        self.path = Path(path)
        self.physical_size = int(physical_size or 0)

    @property
    def iso(self) -> bool:
        return self.type in ISO_TYPES

    # ---- metadata -------------------------------------------------------------------------
    def meta(self) -> dict:
        try:
            return json.loads((self.path / META).read_text())
        except (OSError, ValueError):
            return {}

    def save_meta(self, meta: dict) -> None:
        tmp = self.path / (META + ".tmp")
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp, self.path / META)

    def set_meta(self, location: str, **fields) -> None:
        meta = self.meta()
        entry = meta.setdefault(location, {})
        entry.update(fields)
        self.save_meta(meta)

    def drop_meta(self, location: str) -> None:
        meta = self.meta()
        if meta.pop(location, None) is not None:
            self.save_meta(meta)

    # ---- files ----------------------------------------------------------------------------
    def file(self, location: str) -> Path:
        """The file of a visible VDI (NoSuchVDI if absent, hidden or a path escape)."""
        if (not location or "/" in location or location.startswith(".")
                or not self.visible(location) or not (self.path / location).is_file()):
            raise NoSuchVDI(self.uuid, location)
        return self.path / location

    def visible(self, name: str) -> bool:
        if name.startswith("."):
            return False
        if self.iso:
            return name.lower().endswith(".iso")
        return name.endswith((".qcow2", ".img", ".raw"))

    def locations(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            if self.iso:
                return []        # an ISO library whose directory is not there (yet) is empty
            raise BackendError("SR_NOT_ATTACHED", self.uuid) from None
        return [n for n in names if self.visible(n) and (self.path / n).is_file()]

    def format_of(self, location: str, meta: dict | None = None) -> str:
        entry = (self.meta() if meta is None else meta).get(location, {})
        if entry.get("format"):
            return entry["format"]
        if self.iso or qcow2_header(self.path / location) is None:
            return "raw"
        return "qcow2"

    def info(self, location: str, meta: dict | None = None) -> VdiInfo:
        path = self.file(location)
        entry = (self.meta() if meta is None else meta).get(location, {})
        head = None if entry.get("format") == "raw" else qcow2_header(path)
        sm_config: dict = {}
        if head is not None:
            size, backing = head
            sm_config["vdi_type"] = "qcow2"
            if backing:
                sm_config["vhd-parent"] = os.path.basename(backing)
        else:
            size = path.stat().st_size
            if not self.iso:
                sm_config["vdi_type"] = "raw"
        size = int(entry.get("virtual_size", size))
        return {
            "location": location,
            "virtual_size": size,
            "physical_utilisation": allocated(path),
            "read_only": bool(entry.get("read_only", self.iso)),
            "sharable": bool(entry.get("sharable", False)),
            "type": entry.get("type", "user"),
            "sm_config": sm_config,
            "is_tools_iso": False,
            "name": location if self.iso else "",
        }

    def scan(self) -> list[VdiInfo]:
        meta = self.meta()
        return [self.info(loc, meta) for loc in self.locations()]

    def usage(self) -> SrInfo:
        try:
            st = os.statvfs(self.path)
        except FileNotFoundError:
            return {"physical_size": 0, "physical_utilisation": 0, "virtual_allocation": 0,
                    "content_type": "iso", "sm_config": {}}
        fs_size = st.f_blocks * st.f_frsize
        used = 0
        virtual = 0
        for name in os.listdir(self.path):
            p = self.path / name
            if p.is_file() and name != META:
                used += allocated(p)
        if not self.iso:
            virtual = sum(v["virtual_size"] for v in self.scan())
        size = min(self.physical_size, fs_size) if self.physical_size else fs_size
        return {
            "physical_size": size,
            "physical_utilisation": used,
            "virtual_allocation": virtual,
            "content_type": "iso" if self.iso else "user",
            "sm_config": {} if self.iso else {"allocation": "thin", "format": "qcow2"},
        }

    def free(self) -> int:
        usage = self.usage()
        st = os.statvfs(self.path)
        return max(0, min(st.f_bavail * st.f_frsize,
                          usage["physical_size"] - usage["physical_utilisation"]))

    def check_writable(self) -> None:
        if self.iso:
            raise BackendError("SR_OPERATION_NOT_SUPPORTED", self.uuid)

    def new_location(self, hidden: bool = False) -> str:
        return (".base-" if hidden else "") + f"{_uuid.uuid4()}.qcow2"

    def temp(self) -> Path:
        return self.path / f".tmp-{_uuid.uuid4()}.qcow2"

    # ---- operations -----------------------------------------------------------------------
    async def create(self, virtual_size: int, *, vdi_type: str, sharable: bool,
                     read_only: bool) -> VdiInfo:
        self.check_writable()
        if int(virtual_size) < 0:
            raise BackendError("INVALID_VALUE", "virtual_size", virtual_size)
        size = round_up(max(int(virtual_size), SECTOR), SECTOR)
        # thin, but the qcow2 tables of a fully written disk (8 bytes per 64 KiB cluster)
        # must fit: the check that refuses absurd sizes with the usual SR_FULL
        needed = size // 8192 + 4 * CLUSTER
        free = self.free()
        if needed > free:
            raise InsufficientSpace(needed, free)
        loc = self.new_location()
        tmp = self.temp()
        try:
            await run("qemu-img", "create", "-q", "-f", "qcow2", str(tmp), str(size))
            if vdi_type != "user" or sharable or read_only:
                self.set_meta(loc, type=vdi_type, sharable=bool(sharable),
                              read_only=bool(read_only))
            os.replace(tmp, self.path / loc)
        except BaseException:
            tmp.unlink(missing_ok=True)
            self.drop_meta(loc)
            raise
        return self.info(loc)

    async def overlay(self, path: Path, backing: str, size: int) -> None:
        """A new qcow2 at ``path`` over ``backing`` (a file name in this SR)."""
        await run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "qcow2",
                  str(path), str(size))

    def destroy(self, location: str) -> None:
        self.check_writable()
        path = self.file(location)
        path.unlink()
        self.drop_meta(location)
        self.collect()

    def collect(self) -> None:
        """Delete hidden bases that no file uses as its backing file any more."""
        while True:
            names = os.listdir(self.path)
            used = set()
            for n in names:
                head = qcow2_header(self.path / n) if n.endswith(".qcow2") else None
                if head and head[1]:
                    used.add(os.path.basename(head[1]))
            orphans = [n for n in names if n.startswith(".base-") and n not in used]
            if not orphans:
                return
            for n in orphans:
                (self.path / n).unlink(missing_ok=True)

    async def copy_into(self, src: Path, src_format: str, dst: Path, *, create: bool,
                        progress: Progress) -> None:
        argv = ["qemu-img", "convert", "-U", "-p", "-f", src_format, "-O", "qcow2"]
        if not create:
            argv.append("-n")
        await run(*argv, str(src), str(dst), progress=progress)

    async def resize(self, location: str, new_size: int) -> None:
        await run("qemu-img", "resize", "-q", "-f", self.format_of(location),
                  str(self.file(location)), str(new_size))

    def wipe(self) -> None:
        """sr_create over an existing directory: remove the images this backend made."""
        if self.iso:
            return
        for n in os.listdir(self.path):
            if n == META or n.startswith((".base-", ".tmp-")) or self.visible(n):
                p = self.path / n
                if p.is_file():
                    p.unlink()
                elif p.is_dir() and n.startswith(".tmp-"):
                    shutil.rmtree(p)
