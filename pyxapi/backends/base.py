"""The narrow "hardware" interface the hand-written Xen-API actions call.

A backend knows nothing of the API: no refs, no store rows.  It speaks plain data:

* VMs are named by their ``uuid``; a running VM is a *domain* with a ``domid``.
* Disks are named by ``(sr_uuid, location)``: ``location`` is the backend's own stable, unique
  name for a disk inside an SR (a uuid for the simulator, a file name for qcow2 files).
  The actions keep it in ``VDI.location``.
* Devices inside a domain are named by their ``userdevice`` string ("0", "1", "3"…), as in
  ``VBD.userdevice`` / ``VIF.device``.

Every method is a coroutine unless noted.  Long operations accept ``progress``, a callable taking a
fraction in [0, 1] (it may return an awaitable, which is awaited).  Every operation may be cancelled
with ordinary asyncio cancellation and then leaves the backend consistent: nothing half made.

Failures are :class:`BackendError` (an :class:`~pyxapi.errors.ApiError`, so one that escapes still
reaches the client with a real Xen-API code).  Params that name a VM / SR / disk / device carry the
backend's names (uuid, location, userdevice); the actions should catch and re-raise with refs.

Shapes of the plain dicts exchanged are documented by the ``TypedDict`` classes below (they are
plain ``dict`` at run time).
"""
from __future__ import annotations

import abc
import asyncio
import inspect
import logging
from typing import Any, Callable, Optional, TypedDict

from pyxapi.errors import ApiError

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

Progress = Optional[Callable[[float], Any]]
EventSink = Callable[["DomainEvent"], Any]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

class BackendError(ApiError):
    """A backend failure carrying a Xen-API error code and its params."""


class InsufficientMemory(BackendError):
    """The host cannot give a domain the memory it needs (bytes)."""

    def __init__(self, needed: int, free: int):
        self.needed = int(needed)
        self.free = int(free)
        super().__init__("HOST_NOT_ENOUGH_FREE_MEMORY", self.needed, self.free)


class InsufficientSpace(BackendError):
    """An SR has not the space an operation needs (bytes)."""

    def __init__(self, needed: int, free: int):
        self.needed = int(needed)
        self.free = int(free)
        super().__init__("SR_FULL", self.needed, self.free)


class NoSuchDomain(BackendError):
    """The VM has no domain here; params [vm_uuid, "Running", "Halted"]."""

    def __init__(self, vm_uuid: str):
        self.vm_uuid = vm_uuid
        super().__init__("VM_BAD_POWER_STATE", vm_uuid, "Running", "Halted")


class DomainStateError(BackendError):
    """The domain is not in a state allowing the operation; params [vm_uuid, expected, actual]."""

    def __init__(self, vm_uuid: str, expected: str, actual: str):
        self.vm_uuid = vm_uuid
        super().__init__("VM_BAD_POWER_STATE", vm_uuid, expected, actual)


class DomainTimeout(BackendError):
    """A clean shutdown/reboot the guest did not complete in time; params [vm_uuid, timeout]."""

    def __init__(self, vm_uuid: str, timeout: float):
        self.vm_uuid = vm_uuid
        super().__init__("VM_SHUTDOWN_TIMEOUT", vm_uuid, timeout)


class NoSuchSR(BackendError):
    """The SR is not attached here; params [sr_uuid]."""

    def __init__(self, sr_uuid: str):
        self.sr_uuid = sr_uuid
        super().__init__("SR_NOT_ATTACHED", sr_uuid)


class NoSuchVDI(BackendError):
    """No disk at that location; params [sr_uuid, location]."""

    def __init__(self, sr_uuid: str, location: str):
        self.sr_uuid = sr_uuid
        self.location = location
        super().__init__("VDI_MISSING", sr_uuid, location)


class VDIInUse(BackendError):
    """The disk is attached to a domain; params [location, operation]."""

    def __init__(self, location: str, operation: str):
        self.location = location
        super().__init__("VDI_IN_USE", location, operation)


# --------------------------------------------------------------------------------------------
# Plain data shapes
# --------------------------------------------------------------------------------------------

class DiskSpec(TypedDict, total=False):
    device: str            # userdevice: "0", "1", "3"…
    sr: Optional[str]      # SR uuid; None for an empty CD drive
    location: Optional[str]  # VDI location; None for an empty CD drive
    mode: str              # "RW" | "RO"
    type: str              # "Disk" | "CD"
    bootable: bool


class NicSpec(TypedDict, total=False):
    device: str            # VIF.device: "0", "1"…
    mac: str               # "aa:bb:cc:dd:ee:ff"
    bridge: str            # network bridge, e.g. "xenbr0"
    mtu: int


class DomainSpec(TypedDict, total=False):
    name: str              # name_label, for logs / QEMU -name
    memory: int            # bytes given at start (memory_target, normally memory_dynamic_max)
    memory_static_max: int  # bytes; defaults to memory
    vcpus: int             # VCPUs_at_startup
    vcpus_max: int         # VCPUs_max; defaults to vcpus
    firmware: str          # "bios" | "uefi" (HVM_boot_params["firmware"])
    boot_order: str        # HVM_boot_params["order"], e.g. "cdn"
    platform: dict         # VM.platform as is
    disks: list            # [DiskSpec]
    nics: list             # [NicSpec]
    kernel: dict           # direct boot: {"kernel", "ramdisk", "args"} (optional)
    os_hint: str           # what the guest is, e.g. VM.reference_label "debian-12" (simulator)


class DomainState(TypedDict):
    domid: int
    power_state: str       # "Running" | "Paused"


class DomainEvent(TypedDict, total=False):
    """What a backend reports by itself through the event sink.

    kind "stopped": the domain is gone (already destroyed, memory freed); ``reason`` is
        "halt" | "reboot" | "crash".  The actions apply actions_after_shutdown / _reboot / _crash
        (a restart is a fresh ``domain_start``).
    kind "guest_metrics": the guest agent reported; read ``domain_guest_metrics``.
    kind "paused" / "running": the domain changed run state by itself.
    """
    kind: str
    vm_uuid: str
    domid: int
    reason: str


class VdiInfo(TypedDict, total=False):
    location: str
    virtual_size: int
    physical_utilisation: int
    read_only: bool
    sharable: bool
    type: str              # vdi_type: "user", "system", "suspend", …
    sm_config: dict        # e.g. {"vdi_type": "vhd", "vhd-parent": …}
    is_tools_iso: bool
    name: str              # a suggested name_label (ISO file name), may be ""


class SrInfo(TypedDict, total=False):
    physical_size: int
    physical_utilisation: int
    virtual_allocation: int
    content_type: str      # "user" | "iso"
    sm_config: dict


# --------------------------------------------------------------------------------------------
# Helpers usable by every backend
# --------------------------------------------------------------------------------------------

def round_up(value: int, unit: int) -> int:
    return -(-int(value) // unit) * unit


def cd_drive(disk: dict | None, device, *, needs_media: bool) -> dict:
    """Check that `disk` (a domain's disk at `device`, or None) is a CD drive ready for an
    insert (needs_media=False: it must be empty) or an eject (needs_media=True: a disc in it)."""
    if disk is None:
        raise BackendError("DEVICE_ALREADY_DETACHED", str(device))
    if disk.get("type") != "CD":
        raise BackendError("VBD_NOT_REMOVABLE_MEDIA", str(device))
    if needs_media and disk.get("location") is None:
        raise BackendError("VBD_IS_EMPTY", str(device))
    if not needs_media and disk.get("location") is not None:
        raise BackendError("VBD_NOT_EMPTY", str(device))
    return disk


def device_name(userdevice: str | int) -> str:
    """VBD.device for a userdevice: "0" → "xvda", "3" → "xvdd", "26" → "xvdaa"."""
    n = int(userdevice)
    letters = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("a") + r) + letters
    return "xvd" + letters


async def report(progress: Progress, fraction: float) -> None:
    """Call a progress callback (sync or async); its failures are logged, never raised."""
    if progress is None:
        return
    try:
        res = progress(max(0.0, min(1.0, float(fraction))))
        if inspect.isawaitable(res):
            await res
    except asyncio.CancelledError:
        raise
    except Exception:  # a broken progress reporter must not break the operation
        log.exception("progress callback failed")


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------

class Backend(abc.ABC):
    """What a Xen-API action may ask of the machine."""

    #: short name, e.g. "simulator", "qemu"
    name: str = "abstract"

    def __init__(self) -> None:
        self._event_sink: EventSink | None = None

    # ---- life cycle / events ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect / recover.  Called once by the server before any other call."""

    async def close(self) -> None:
        """Stop background work.  Domains of a real backend keep running."""

    def set_event_sink(self, sink: EventSink | None) -> None:
        """Install the callable (sync or async) receiving :class:`DomainEvent` dicts."""
        self._event_sink = sink

    async def emit(self, event: DomainEvent) -> None:
        """Deliver an event to the sink; sink failures are logged, never raised."""
        sink = self._event_sink
        if sink is None:
            return
        try:
            res = sink(event)
            if inspect.isawaitable(res):
                await res
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event sink failed on %r", event)

    # ---- host --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def host_info(self) -> dict:
        """Static facts of the host.

        Keys: ``hostname``, ``address``, ``cpu_count``, ``socket_count``, ``cpu_info`` (the host.cpu_info map, str → str),
        ``cpus`` (list of host_cpu dicts: number, vendor, speed (MHz int), modelname, family,
        model, stepping, flags, features), ``memory_total``, ``memory_overhead`` (hypervisor),
        ``dom0_memory``, ``dom0_vcpus``, ``software_version`` (str → str), ``capabilities``
        (list), ``sched_policy``, ``bios_strings``, ``cpu_configuration``, ``chipset_info``,
        ``pifs`` (list of {device, mac, mtu, bridge, speed, duplex, vendor, model, carrier,
        management, ip, netmask, gateway, dns}), ``supported_sr_types`` (list), ``boot_time``
        (datetime, naive UTC).
        """

    @abc.abstractmethod
    async def host_free_memory(self) -> int:
        """Bytes free for new domains now."""

    def memory_overhead(self, memory_static_max: int, vcpus_max: int = 1) -> int:
        """Bytes a domain costs beyond its memory (shadow, device model, video RAM).

        The actions store it in VM.memory_overhead; ``domain_start`` needs
        ``memory + memory_overhead(memory_static_max, vcpus_max)`` free.
        """
        raw = int(memory_static_max) // 256 + max(1, int(vcpus_max)) * MiB + 9 * MiB
        return round_up(raw, MiB)

    def suspend_image_size(self, memory_static_max: int) -> int:
        """Virtual size the actions should give the suspend VDI of a VM."""
        return round_up(int(memory_static_max) + 8 * MiB, 2 * MiB)

    # ---- domains -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def domain_start(self, vm_uuid: str, spec: DomainSpec, *, paused: bool = False,
                           progress: Progress = None) -> int:
        """Build and boot a domain; return its domid.  InsufficientMemory if it does not fit."""

    @abc.abstractmethod
    async def domain_shutdown(self, vm_uuid: str, *, clean: bool = True, timeout: float = 1200.0,
                              progress: Progress = None) -> None:
        """Stop a domain.  clean: ask the guest (DomainTimeout if it does not within timeout);
        hard: destroy at once.  A hard shutdown wins over a clean one in progress."""

    @abc.abstractmethod
    async def domain_reboot(self, vm_uuid: str, spec: DomainSpec | None = None, *,
                            clean: bool = True, timeout: float = 1200.0,
                            progress: Progress = None) -> int:
        """Reboot (a new domain, so a new domid, which is returned).  ``spec`` given: boot
        with that configuration instead of the current one."""

    @abc.abstractmethod
    async def domain_pause(self, vm_uuid: str) -> None: ...

    @abc.abstractmethod
    async def domain_unpause(self, vm_uuid: str) -> None: ...

    @abc.abstractmethod
    async def domain_suspend(self, vm_uuid: str, sr_uuid: str, location: str, *,
                             progress: Progress = None) -> None:
        """Save the domain's memory into the (already created) suspend disk and destroy it.
        Size the disk with :meth:`suspend_image_size`."""

    @abc.abstractmethod
    async def domain_resume(self, vm_uuid: str, spec: DomainSpec, sr_uuid: str, location: str,
                            *, paused: bool = False, progress: Progress = None) -> int:
        """Rebuild a domain from a suspend image; return the new domid.  The suspend disk is
        left in place: the actions destroy it afterwards."""

    @abc.abstractmethod
    async def domain_destroy(self, vm_uuid: str) -> None:
        """Destroy at once; no error if there is no such domain."""

    @abc.abstractmethod
    async def domain_list(self) -> dict[str, DomainState]:
        """All domains (not dom0): vm_uuid → {domid, power_state}.  For recovery at start-up."""

    @abc.abstractmethod
    async def domain_metrics(self, vm_uuid: str) -> dict:
        """Live metrics: ``memory_actual``, ``vcpus_number``, ``vcpus_utilisation``
        ({"0": 0.03, …}), ``vcpus_cpu`` ({"0": 5, …}), ``start_time`` (datetime), ``state``
        (list of str), ``hvm``, ``current_domain_type``, ``domid``, ``power_state``."""

    @abc.abstractmethod
    async def domain_guest_metrics(self, vm_uuid: str) -> dict | None:
        """What the guest agent reported, None if nothing (yet / no agent): ``os_version``,
        ``PV_drivers_version``, ``PV_drivers_up_to_date``, ``PV_drivers_detected``,
        ``networks``, ``other``, ``disks``, ``memory``, ``netbios_name``,
        ``can_use_hotplug_vbd``, ``can_use_hotplug_vif``, ``live``, ``last_updated``."""

    @abc.abstractmethod
    async def domain_console(self, vm_uuid: str) -> dict | None:
        """Where the graphical console is served: {"protocol": "rfb", "port": int} or
        {"protocol": "rfb", "path": unix socket}; None if none."""

    @abc.abstractmethod
    async def domain_attach_disk(self, vm_uuid: str, disk: DiskSpec) -> str:
        """Hot-plug a disk; return its device name (VBD.device, e.g. "xvdb")."""

    @abc.abstractmethod
    async def domain_detach_disk(self, vm_uuid: str, device: str) -> None:
        """Hot-unplug the disk at userdevice ``device``."""

    @abc.abstractmethod
    async def domain_attach_nic(self, vm_uuid: str, nic: NicSpec) -> None: ...

    @abc.abstractmethod
    async def domain_detach_nic(self, vm_uuid: str, device: str) -> None: ...

    @abc.abstractmethod
    async def domain_insert_cd(self, vm_uuid: str, device: str, sr_uuid: str,
                               location: str) -> None:
        """Put media in the CD drive at userdevice ``device`` (VBD_NOT_EMPTY if full)."""

    @abc.abstractmethod
    async def domain_eject_cd(self, vm_uuid: str, device: str) -> None:
        """Empty the CD drive (VBD_IS_EMPTY if already empty)."""

    @abc.abstractmethod
    async def domain_set_memory(self, vm_uuid: str, target: int) -> None:
        """Balloon a running domain to ``target`` bytes (InsufficientMemory to grow)."""

    @abc.abstractmethod
    async def domain_set_vcpus(self, vm_uuid: str, vcpus: int) -> None:
        """Change the number of online vCPUs (≤ the domain's vcpus_max)."""

    # The names VM.send_trigger accepts (xenopsd's): hardware buttons and signals.
    TRIGGERS = ("reset", "init", "nmi", "power", "sleep", "s3resume")

    async def domain_send_sysrq(self, vm_uuid: str, key: str) -> None:
        """Press the magic SysRq ``key`` (one letter or digit) in the guest."""
        raise BackendError("NOT_IMPLEMENTED", "send_sysrq")

    async def domain_send_trigger(self, vm_uuid: str, trigger: str) -> None:
        """Fire one of :data:`TRIGGERS`; NOT_IMPLEMENTED for one the machine lacks."""
        raise BackendError("NOT_IMPLEMENTED", "send_trigger")

    # ---- storage -----------------------------------------------------------------------------

    @abc.abstractmethod
    def supported_sr_types(self) -> list[str]:
        """SR types this backend can create/attach (plain, not a coroutine)."""

    @abc.abstractmethod
    async def sr_create(self, sr_uuid: str, sr_type: str, device_config: dict, *,
                        physical_size: int = 0) -> SrInfo:
        """Make a new, empty SR (wipes what was there).  physical_size 0: the device's size."""

    @abc.abstractmethod
    async def sr_attach(self, sr_uuid: str, sr_type: str, device_config: dict) -> SrInfo:
        """Attach an existing SR (PBD.plug); its disks are found by ``sr_scan``.  Attaching an
        already attached SR is harmless."""

    @abc.abstractmethod
    async def sr_detach(self, sr_uuid: str) -> None: ...

    @abc.abstractmethod
    async def sr_destroy(self, sr_uuid: str) -> None:
        """Erase the SR; ``SR_NOT_EMPTY`` while it holds disks."""

    @abc.abstractmethod
    async def sr_scan(self, sr_uuid: str) -> list[VdiInfo]:
        """Every disk of the SR (hidden internal nodes and disks being made excluded)."""

    @abc.abstractmethod
    async def sr_usage(self, sr_uuid: str) -> SrInfo: ...

    @abc.abstractmethod
    async def vdi_create(self, sr_uuid: str, virtual_size: int, *, vdi_type: str = "user",
                         sharable: bool = False, read_only: bool = False,
                         progress: Progress = None) -> VdiInfo:
        """A new, empty disk.  virtual_size is rounded up as the format needs (read it back)."""

    @abc.abstractmethod
    async def vdi_info(self, sr_uuid: str, location: str) -> VdiInfo: ...

    @abc.abstractmethod
    async def vdi_destroy(self, sr_uuid: str, location: str, *,
                          progress: Progress = None) -> None: ...

    @abc.abstractmethod
    async def vdi_clone(self, sr_uuid: str, location: str, *,
                        progress: Progress = None) -> VdiInfo:
        """A new writable disk with the same content, in the same SR."""

    @abc.abstractmethod
    async def vdi_snapshot(self, sr_uuid: str, location: str, *,
                           progress: Progress = None) -> VdiInfo:
        """A point-in-time copy in the same SR (the actions mark it is_a_snapshot)."""

    @abc.abstractmethod
    async def vdi_copy(self, src_sr_uuid: str, location: str, dst_sr_uuid: str, *,
                       dst_location: str | None = None, progress: Progress = None) -> VdiInfo:
        """Full copy into another (or the same) SR; into ``dst_location`` if given (an existing
        disk at least as large).  Cancelled: no new disk is left behind."""

    @abc.abstractmethod
    async def vdi_resize(self, sr_uuid: str, location: str, new_size: int, *,
                         progress: Progress = None) -> VdiInfo:
        """Grow a disk (VDI_TOO_SMALL to shrink)."""


__all__ = [
    "KiB", "MiB", "GiB", "TiB", "Progress", "EventSink",
    "BackendError", "InsufficientMemory", "InsufficientSpace", "NoSuchDomain",
    "DomainStateError", "DomainTimeout", "NoSuchSR", "NoSuchVDI", "VDIInUse",
    "DiskSpec", "NicSpec", "DomainSpec", "DomainState", "DomainEvent", "VdiInfo", "SrInfo",
    "round_up", "device_name", "report", "Backend",
]
