"""In-memory storage: SRs holding disk nodes, with realistic space accounting.

Thin SRs ("ext", "file", "nfs") behave like VHD files: a disk costs its metadata plus the data
written to it.  A snapshot or clone turns the disk's data into a hidden read-only parent shared by
the disk and the new copy (both start empty); destroying disks garbage-collects parents nobody
uses and coalesces a parent left with a single child into it.

Thick SRs ("lvm", "lvmoiscsi", "lvmohba") behave like logical volumes: every visible disk costs its
whole virtual size (rounded up to the extent size), snapshots and clones included.

ISO SRs ("iso") are read-only libraries of ISO files.
"""
from __future__ import annotations

import uuid as _uuid
from dataclasses import asdict, dataclass, field
from typing import Optional

from pyxapi.backends.base import (
    BackendError, GiB, InsufficientSpace, MiB, NoSuchVDI, TiB, VdiInfo, round_up,
)

THIN_TYPES = ("ext", "file", "nfs")
THICK_TYPES = ("lvm", "lvmoiscsi", "lvmohba")
ISO_TYPES = ("iso",)
SR_TYPES = THIN_TYPES + THICK_TYPES + ISO_TYPES

DEFAULT_SIZES = {
    "ext": 500 * GiB, "file": 500 * GiB, "lvm": 500 * GiB,
    "nfs": 2 * TiB, "lvmoiscsi": TiB, "lvmohba": TiB, "iso": TiB,
}

BLOCK = 2 * MiB          # VHD data block: virtual sizes are rounded up to it
EXTENT = 4 * MiB         # LVM extent

TOOLS_ISO = ("guest-tools.iso", 62 * MiB)
ISO_LIBRARY = [
    ("debian-12.7.0-amd64-netinst.iso", 631 * MiB),
    ("ubuntu-24.04.1-live-server-amd64.iso", 2694 * MiB),
    ("Rocky-9.4-x86_64-minimal.iso", 1782 * MiB),
    ("AlmaLinux-9.4-x86_64-boot.iso", 936 * MiB),
    ("Win11_23H2_English_x64v2.iso", 6544 * MiB),
    ("SERVER_EVAL_x64FRE_en-us.iso", 4872 * MiB),
]


def vhd_metadata(virtual_size: int) -> int:
    """Footer, header and block allocation table of a dynamic VHD."""
    bat = round_up(max(1, virtual_size // BLOCK) * 4, 4096)
    return bat + 3 * 4096


@dataclass
class Node:
    location: str
    virtual_size: int
    allocated: int = 0               # data held by this node itself
    parent: Optional[str] = None     # hidden parent node (thin chains)
    hidden: bool = False
    read_only: bool = False
    sharable: bool = False
    vdi_type: str = "user"
    pending: bool = False            # being made: invisible, removed if the operation fails
    is_tools_iso: bool = False
    name: str = ""
    suspend_image_of: str = ""       # vm uuid whose memory image this disk holds


@dataclass
class SimSR:
    uuid: str
    type: str
    physical_size: int
    device_config: dict = field(default_factory=dict)
    nodes: dict = field(default_factory=dict)     # location → Node
    attached: bool = True

    # ---- kinds ----------------------------------------------------------------------------
    @property
    def thin(self) -> bool:
        return self.type in THIN_TYPES

    @property
    def iso(self) -> bool:
        return self.type in ISO_TYPES

    # ---- accounting -----------------------------------------------------------------------
    def node_usage(self, n: Node) -> int:
        if self.iso:
            return n.allocated
        if self.thin:
            return vhd_metadata(n.virtual_size) + n.allocated
        if n.hidden:
            return round_up(vhd_metadata(n.virtual_size) + n.allocated, EXTENT)
        return round_up(n.virtual_size + vhd_metadata(n.virtual_size), EXTENT)

    def utilisation(self) -> int:
        return sum(self.node_usage(n) for n in self.nodes.values())

    def free(self) -> int:
        return max(0, self.physical_size - self.utilisation())

    def virtual_allocation(self) -> int:
        return sum(n.virtual_size for n in self.nodes.values() if not n.hidden)

    def need(self, nbytes: int) -> None:
        free = self.free()
        if nbytes > free:
            raise InsufficientSpace(nbytes, free)

    # ---- look-ups -------------------------------------------------------------------------
    def get(self, location: str) -> Node:
        n = self.nodes.get(location)
        if n is None or n.hidden or n.pending:
            raise NoSuchVDI(self.uuid, location)
        return n

    def children(self, location: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.parent == location]

    def data_of(self, n: Node) -> int:
        """Logical data a reader of the disk sees (own blocks plus the chain's)."""
        total, cur = 0, n
        while cur is not None:
            total += cur.allocated
            cur = self.nodes.get(cur.parent) if cur.parent else None
        return min(n.virtual_size, total)

    def info(self, n: Node) -> VdiInfo:
        sm_config = {}
        if not self.iso:
            sm_config["vdi_type"] = "vhd" if (self.thin or n.parent) else "aio"
        if n.parent:
            sm_config["vhd-parent"] = n.parent
        return {
            "location": n.location,
            "virtual_size": n.virtual_size,
            "physical_utilisation": self.node_usage(n),
            "read_only": n.read_only,
            "sharable": n.sharable,
            "type": n.vdi_type,
            "sm_config": sm_config,
            "is_tools_iso": n.is_tools_iso,
            "name": n.name,
        }

    # ---- mutations (synchronous, all-or-nothing) ------------------------------------------
    def new_location(self) -> str:
        while True:
            loc = str(_uuid.uuid4())
            if loc not in self.nodes:
                return loc

    def check_writable(self) -> None:
        if self.iso:
            raise BackendError("SR_OPERATION_NOT_SUPPORTED", self.uuid)

    def create(self, virtual_size: int, *, vdi_type="user", sharable=False, read_only=False,
               pending=False) -> Node:
        self.check_writable()
        if virtual_size < 0:
            raise BackendError("INVALID_VALUE", "virtual_size", virtual_size)
        size = round_up(max(virtual_size, 0), BLOCK)
        n = Node(self.new_location(), size, vdi_type=vdi_type, sharable=sharable,
                 read_only=read_only, pending=pending)
        self.need(self.node_usage(n))
        self.nodes[n.location] = n
        return n

    def duplicate(self, location: str, *, read_only: bool) -> Node:
        """Snapshot/clone: a new disk with the content of ``location``."""
        self.check_writable()
        src = self.get(location)
        if not self.thin:
            new = Node(self.new_location(), src.virtual_size, allocated=self.data_of(src),
                       vdi_type=src.vdi_type, read_only=read_only, sharable=src.sharable,
                       suspend_image_of=src.suspend_image_of)
            self.need(self.node_usage(new))
            self.nodes[new.location] = new
            return new
        if src.allocated == 0 and src.parent:
            # nothing of its own: the copy can share the same parent
            new = Node(self.new_location(), src.virtual_size, parent=src.parent,
                       vdi_type=src.vdi_type, read_only=read_only, sharable=src.sharable,
                       suspend_image_of=src.suspend_image_of)
            self.need(self.node_usage(new))
            self.nodes[new.location] = new
            return new
        base = Node(self.new_location(), src.virtual_size, allocated=src.allocated,
                    parent=src.parent, hidden=True, read_only=True, vdi_type=src.vdi_type)
        new = Node(self.new_location(), src.virtual_size, parent=base.location,
                   vdi_type=src.vdi_type, read_only=read_only, sharable=src.sharable,
                   suspend_image_of=src.suspend_image_of)  # a checkpoint's memory image
        # the source's data moves to the base: the extra cost is two sets of metadata
        self.need(self.node_usage(new) + vhd_metadata(src.virtual_size))
        self.nodes[base.location] = base
        self.nodes[new.location] = new
        src.allocated = 0
        src.parent = base.location
        return new

    def add_copy(self, virtual_size: int, data: int, *, vdi_type="user",
                 pending=True) -> Node:
        """A new disk holding ``data`` bytes of content (target of a full copy)."""
        self.check_writable()
        n = Node(self.new_location(), virtual_size, allocated=min(virtual_size, data),
                 vdi_type=vdi_type, pending=pending)
        self.need(self.node_usage(n))
        self.nodes[n.location] = n
        return n

    def remove(self, location: str) -> None:
        n = self.nodes.pop(location, None)
        if n is None:
            return
        self._collect(n.parent)

    def _collect(self, location: Optional[str]) -> None:
        """Drop hidden parents nobody uses; coalesce a parent with one child into it."""
        while location:
            p = self.nodes.get(location)
            if p is None or not p.hidden:
                return
            kids = self.children(location)
            if not kids:
                del self.nodes[location]
                location = p.parent
                continue
            if len(kids) == 1:
                child = kids[0]
                child.allocated = min(child.virtual_size, child.allocated + p.allocated)
                child.parent = p.parent
                del self.nodes[location]
            return

    def write(self, location: str, nbytes: int) -> None:
        """Guest writes ``nbytes`` of new data (thin SRs grow; thick ones are preallocated)."""
        n = self.get(location)
        grow = max(0, min(n.virtual_size - self.data_of(n), int(nbytes)))
        if self.thin:
            self.need(grow)
        n.allocated += grow

    def resize(self, location: str, new_size: int) -> Node:
        self.check_writable()
        n = self.get(location)
        size = round_up(int(new_size), BLOCK)
        if size < n.virtual_size:
            raise BackendError("VDI_TOO_SMALL", location, n.virtual_size)
        before = self.node_usage(n)
        old = n.virtual_size
        n.virtual_size = size
        extra = self.node_usage(n) - before
        n.virtual_size = old
        self.need(extra)
        n.virtual_size = size
        return n

    # ---- persistence ----------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "uuid": self.uuid, "type": self.type, "physical_size": self.physical_size,
            "device_config": dict(self.device_config),
            "nodes": [asdict(n) for n in self.nodes.values() if not n.pending],
        }

    @classmethod
    def from_json(cls, d: dict) -> "SimSR":
        sr = cls(d["uuid"], d["type"], int(d["physical_size"]), dict(d.get("device_config", {})),
                 attached=False)
        for nd in d.get("nodes", []):
            n = Node(**nd)
            sr.nodes[n.location] = n
        return sr


def make_sr(sr_uuid: str, sr_type: str, device_config: dict, physical_size: int = 0) -> SimSR:
    if sr_type not in SR_TYPES:
        raise BackendError("SR_UNKNOWN_DRIVER", sr_type)
    size = int(physical_size) if physical_size and physical_size > 0 else DEFAULT_SIZES[sr_type]
    sr = SimSR(sr_uuid, sr_type, size, dict(device_config or {}))
    if sr.iso:
        loc = str((device_config or {}).get("location", ""))
        tools = "packages/iso" in loc or (device_config or {}).get("tools") in ("true", True)
        files = [TOOLS_ISO] if tools else ISO_LIBRARY
        for name, size_ in files:
            sr.nodes[name] = Node(name, size_, allocated=size_, read_only=True, name=name,
                                  is_tools_iso=tools)
    return sr
