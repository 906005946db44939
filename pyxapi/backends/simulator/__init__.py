"""The simulator backend: a pure-Python, in-memory host.

* Domains get domids counting up from 1 (0 is dom0) and cost their memory plus an overhead;
  a start that does not fit raises InsufficientMemory.
* Storage is modelled by :mod:`.storage` (thin/thick SRs, snapshot chains, SR full).  With a
  ``state_dir`` the SRs and their disks are saved to ``simulator-storage.json`` and found again
  on the next run (detached: the server re-attaches them by ``sr_attach``).  Domains are not
  saved: restarting the simulator is rebooting the host.
* A simulated guest agent reports OS version, PV drivers and IP addresses a moment after a
  domain starts (delay ``guest_agent``), unless the guest OS is unknown ("Other install media").
* Every operation waits ``delays[op]`` seconds (default 0), reporting progress as it goes.
  Set them with the ``delays`` argument or ``PYXAPI_SIM_DELAY="start=2,shutdown=1,vdi_copy=5"``
  (``all=…`` sets every operation).  See :data:`DELAY_KEYS`.
* Test/debug hooks: :meth:`SimulatorBackend.simulate_guest_stop` (guest halts, reboots or crashes
  by itself → "stopped" event) and :meth:`SimulatorBackend.simulate_guest_write`.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import ipaddress
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pyxapi.backends.base import (
    Backend, BackendError, DiskSpec, DomainSpec, DomainState, DomainStateError, DomainTimeout,
    GiB, InsufficientMemory, NicSpec, NoSuchDomain, NoSuchSR, Progress, SrInfo, VDIInUse,
    VdiInfo, cd_drive, device_name, report,
)
from pyxapi.backends.simulator import guests as _guests
from pyxapi.backends.simulator import host as _host
from pyxapi.backends.simulator.storage import SR_TYPES, SimSR, make_sr

log = logging.getLogger(__name__)

DELAY_KEYS = (
    "start", "shutdown", "hard_shutdown", "reboot", "hard_reboot", "pause", "unpause",
    "suspend", "resume", "destroy", "attach_disk", "detach_disk", "attach_nic", "detach_nic",
    "insert_cd", "eject_cd", "set_memory", "set_vcpus",
    "sr_create", "sr_attach", "sr_detach", "sr_destroy", "sr_scan",
    "vdi_create", "vdi_destroy", "vdi_clone", "vdi_snapshot", "vdi_copy", "vdi_resize",
    "guest_agent",
)
DELAY_ALIASES = {
    "clean_shutdown": "shutdown", "clean_reboot": "reboot", "copy": "vdi_copy",
    "clone": "vdi_clone", "snapshot": "vdi_snapshot", "resize": "vdi_resize",
    "agent": "guest_agent",
}
ENV_DELAY = "PYXAPI_SIM_DELAY"
STORAGE_FILE = "simulator-storage.json"


def parse_delays(text: str) -> dict[str, float]:
    """``"start=2, shutdown=1"`` → {"start": 2.0, "shutdown": 1.0} (keys checked)."""
    out: dict[str, float] = {}
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{ENV_DELAY}: expected name=seconds, got {part!r}")
        out[key.strip()] = float(value)
    return out


def normalise_delays(delays: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (delays or {}).items():
        value = float(value)
        if value < 0:
            raise ValueError(f"delay {key} must be >= 0")
        if key in ("all", "*"):
            for k in DELAY_KEYS:
                if k != "guest_agent":
                    out[k] = value
            continue
        key = DELAY_ALIASES.get(key, key)
        if key not in DELAY_KEYS:
            raise ValueError(f"unknown simulator delay {key!r}; known: {', '.join(DELAY_KEYS)}")
        out[key] = value
    return out


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None, microsecond=0)


@dataclass
class Domain:
    vm_uuid: str
    domid: int
    spec: dict
    memory: int                 # current target (bytes)
    overhead: int
    vcpus: int
    vcpus_max: int
    state: str = "building"     # building | running | paused | shutting_down | suspending
    start_time: _dt.datetime = field(default_factory=_now)
    started_mono: float = field(default_factory=time.monotonic)
    disks: dict = field(default_factory=dict)   # userdevice → DiskSpec
    nics: dict = field(default_factory=dict)    # device → NicSpec
    guest: Optional[dict] = None                # guest metrics once the agent reported
    agent_task: Optional[asyncio.Task] = None

    @property
    def footprint(self) -> int:
        return self.memory + self.overhead

    @property
    def power_state(self) -> str:
        return "Paused" if self.state in ("building", "paused") else "Running"


class SimulatorBackend(Backend):
    name = "simulator"

    def __init__(self, state_dir: str | os.PathLike | None = None, *,
                 delays: dict | None = None, use_env: bool = True,
                 memory_total: int = 64 * GiB, cpu_count: int = 32, socket_count: int = 1,
                 hostname: str = "xcp-ng-sim", seed: int | None = None, **_ignored):
        super().__init__()
        merged: dict[str, float] = {k: 0.0 for k in DELAY_KEYS}
        merged["guest_agent"] = 1.0
        if use_env and os.environ.get(ENV_DELAY):
            merged.update(normalise_delays(parse_delays(os.environ[ENV_DELAY])))
        if isinstance(delays, str):
            delays = parse_delays(delays)
        merged.update(normalise_delays(delays or {}))
        self.delays = merged
        self.memory_total = int(memory_total)
        self.cpu_count = int(cpu_count)
        self.socket_count = int(socket_count)
        self.hostname = hostname
        self.boot_time = _now()
        self._rng = random.Random(seed)
        self.dom0_memory = _host.dom0_memory_for(self.memory_total)
        self.xen_overhead = _host.hypervisor_overhead_for(self.memory_total)
        self._domains: dict[str, Domain] = {}
        self._next_domid = 1
        self._srs: dict[str, SimSR] = {}
        self._leases: dict[str, str] = {}      # mac → IPv4 address
        self._next_ip = int(ipaddress.IPv4Address("10.0.0.10"))
        self.state_dir = Path(state_dir) if state_dir else None
        self._reactions: set[asyncio.Task] = set()  # guests reacting to keys and triggers
        self._load_storage()

    # ================================================================ plumbing

    async def _work(self, op: str, progress: Progress = None, *, limit: float | None = None):
        """Spend delays[op] seconds, reporting progress.  With ``limit`` and a longer delay,
        waits ``limit`` and returns False (the operation did not complete in time)."""
        d = self.delays.get(op, 0.0)
        if d <= 0:
            await asyncio.sleep(0)
            await report(progress, 1.0)
            return True
        timed_out = limit is not None and d > limit
        total = limit if timed_out else d
        steps = max(1, min(100, int(total / 0.05)))
        for i in range(steps):
            await asyncio.sleep(total / steps)
            if not timed_out:
                await report(progress, (i + 1) / steps)
        return not timed_out

    def _save_storage(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / STORAGE_FILE
        tmp = path.with_suffix(".tmp")
        data = {"version": 1, "srs": [sr.to_json() for sr in self._srs.values()]}
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def _load_storage(self) -> None:
        if self.state_dir is None:
            return
        path = self.state_dir / STORAGE_FILE
        if not path.exists():
            return
        data = json.loads(path.read_text())
        for d in data.get("srs", []):
            sr = SimSR.from_json(d)
            self._srs[sr.uuid] = sr

    def _dom(self, vm_uuid: str) -> Domain:
        d = self._domains.get(vm_uuid)
        if d is None:
            raise NoSuchDomain(vm_uuid)
        return d

    def _sr(self, sr_uuid: str) -> SimSR:
        sr = self._srs.get(sr_uuid)
        if sr is None or not sr.attached:
            raise NoSuchSR(sr_uuid)
        return sr

    def _used_memory(self) -> int:
        return sum(d.footprint for d in self._domains.values())

    def _free_memory(self) -> int:
        return max(0, self.memory_total - self.xen_overhead - self.dom0_memory
                   - self._used_memory())

    def _users_of(self, sr_uuid: str, location: str) -> list[tuple[Domain, dict]]:
        out = []
        for d in self._domains.values():
            for disk in d.disks.values():
                if disk.get("sr") == sr_uuid and disk.get("location") == location:
                    out.append((d, disk))
        return out

    def _check_disk(self, vm_uuid: str, disk: dict, op: str) -> dict:
        disk = dict(disk)
        disk["device"] = str(disk.get("device", "0"))
        disk.setdefault("type", "Disk")
        disk.setdefault("mode", "RO" if disk["type"] == "CD" else "RW")
        disk.setdefault("bootable", False)
        if disk.get("location") is None:
            if disk["type"] != "CD":
                raise BackendError("VBD_IS_EMPTY", disk["device"])
            disk["sr"] = None
            return disk
        sr = self._sr(disk["sr"])
        node = sr.get(disk["location"])
        if disk["mode"] == "RW" and not node.sharable:
            if node.read_only or sr.iso:
                raise BackendError("VDI_READ_ONLY", disk["location"])
            for other, odisk in self._users_of(disk["sr"], disk["location"]):
                if other.vm_uuid != vm_uuid and odisk.get("mode") == "RW":
                    raise VDIInUse(disk["location"], op)
        return disk

    def _spawn_agent(self, d: Domain) -> None:
        if d.agent_task is not None and not d.agent_task.done():
            return
        profile = _guests.profile_for(d.spec.get("os_hint"))
        if profile is None:
            return
        d.agent_task = asyncio.get_running_loop().create_task(self._agent(d, profile))

    async def _agent(self, d: Domain, profile: dict) -> None:
        try:
            await asyncio.sleep(self.delays.get("guest_agent", 0.0))
            if self._domains.get(d.vm_uuid) is not d:
                return
            d.guest = self._guest_report(d, profile)
            await self.emit({"kind": "guest_metrics", "vm_uuid": d.vm_uuid, "domid": d.domid})
        except asyncio.CancelledError:
            pass

    def _lease(self, mac: str) -> str:
        mac = (mac or "").lower()
        ip = self._leases.get(mac)
        if ip is None:
            ip = str(ipaddress.IPv4Address(self._next_ip))
            self._next_ip += 1
            if str(ip).endswith(".255") or str(ip).endswith(".0"):
                ip = str(ipaddress.IPv4Address(self._next_ip))
                self._next_ip += 1
            if mac:
                self._leases[mac] = ip
        return ip

    def _networks(self, d: Domain) -> dict:
        nets = {}
        for dev, nic in sorted(d.nics.items(), key=lambda kv: int(kv[0])):
            ip = self._lease(nic.get("mac", ""))
            nets[f"{dev}/ip"] = ip
            nets[f"{dev}/ipv4/0"] = ip
            v6 = _guests.link_local_ipv6(nic.get("mac", ""))
            if v6:
                nets[f"{dev}/ipv6/0"] = v6
        return nets

    def _guest_report(self, d: Domain, profile: dict) -> dict:
        netbios = {}
        if profile["family"] == "windows":
            netbios = {"host_name": ("WIN-" + d.vm_uuid.replace("-", "")[:11]).upper()}
        return {
            "os_version": dict(profile["os_version"]),
            "PV_drivers_version": dict(profile["tools"]),
            "PV_drivers_up_to_date": True,
            "PV_drivers_detected": True,
            "networks": self._networks(d),
            "other": _guests.guest_other(profile),
            "disks": {},
            "memory": {},
            "netbios_name": netbios,
            "can_use_hotplug_vbd": "yes",
            "can_use_hotplug_vif": "yes",
            "live": True,
            "last_updated": _now(),
        }

    def _refresh_guest_networks(self, d: Domain) -> None:
        if d.guest is not None:
            d.guest["networks"] = self._networks(d)
            d.guest["last_updated"] = _now()

    def _remove(self, d: Domain) -> None:
        if self._domains.get(d.vm_uuid) is d:
            del self._domains[d.vm_uuid]
        if d.agent_task is not None and not d.agent_task.done():
            d.agent_task.cancel()

    def _new_domid(self) -> int:
        domid = self._next_domid
        self._next_domid += 1
        return domid

    def _sizes(self, spec: dict) -> tuple[int, int, int, int]:
        memory = int(spec.get("memory") or 0)
        if memory <= 0:
            raise BackendError("INVALID_VALUE", "memory", memory)
        static_max = max(memory, int(spec.get("memory_static_max") or memory))
        vcpus = max(1, int(spec.get("vcpus") or 1))
        vcpus_max = max(vcpus, int(spec.get("vcpus_max") or vcpus))
        return memory, static_max, vcpus, vcpus_max

    async def _build(self, vm_uuid: str, spec: dict, *, paused: bool, op: str | None,
                     progress: Progress) -> Domain:
        """Reserve, wait, and bring up a domain (start, resume, reboot)."""
        memory, static_max, vcpus, vcpus_max = self._sizes(spec)
        overhead = self.memory_overhead(static_max, vcpus_max)
        disks = {}
        for disk in spec.get("disks", []) or []:
            disk = self._check_disk(vm_uuid, disk, op)
            disks[disk["device"]] = disk
        nics = {}
        for nic in spec.get("nics", []) or []:
            nic = dict(nic)
            nic["device"] = str(nic.get("device", "0"))
            nics[nic["device"]] = nic
        free = self._free_memory()
        if memory + overhead > free:
            raise InsufficientMemory(memory + overhead, free)
        d = Domain(vm_uuid, self._new_domid(), dict(spec), memory, overhead, vcpus, vcpus_max,
                   disks=disks, nics=nics)
        self._domains[vm_uuid] = d
        try:
            if op is not None:
                await self._work(op, progress)
        except BaseException:
            self._remove(d)
            raise
        d.start_time = _now()
        d.started_mono = time.monotonic()
        d.state = "paused" if paused else "running"
        if not paused:
            self._spawn_agent(d)
        return d

    # ================================================================ life cycle

    async def close(self) -> None:
        for d in list(self._domains.values()):
            if d.agent_task is not None and not d.agent_task.done():
                d.agent_task.cancel()
        tasks = [d.agent_task for d in self._domains.values() if d.agent_task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ================================================================ host

    async def host_info(self) -> dict:
        return _host.build_host_info(
            hostname=self.hostname, memory_total=self.memory_total, cpu_count=self.cpu_count,
            socket_count=self.socket_count, boot_time=self.boot_time,
            supported_sr_types=self.supported_sr_types())

    async def host_free_memory(self) -> int:
        return self._free_memory()

    # ================================================================ domains

    async def domain_start(self, vm_uuid: str, spec: DomainSpec, *, paused: bool = False,
                           progress: Progress = None) -> int:
        if vm_uuid in self._domains:
            raise DomainStateError(vm_uuid, "Halted", self._domains[vm_uuid].power_state)
        d = await self._build(vm_uuid, dict(spec), paused=paused, op="start", progress=progress)
        return d.domid

    async def domain_shutdown(self, vm_uuid: str, *, clean: bool = True,
                              timeout: float = 1200.0, progress: Progress = None) -> None:
        d = self._dom(vm_uuid)
        if d.state == "building":
            raise DomainStateError(vm_uuid, "Running", "Halted")
        if not clean:
            await self._work("hard_shutdown", progress)
            self._remove(d)
            return
        if d.state != "running":
            raise DomainStateError(vm_uuid, "Running", d.power_state)
        d.state = "shutting_down"
        try:
            done = await self._work("shutdown", progress, limit=timeout)
        except BaseException:
            if d.state == "shutting_down":
                d.state = "running"
            raise
        if self._domains.get(vm_uuid) is not d:
            return                                  # a hard shutdown got there first
        if not done:
            d.state = "running"
            raise DomainTimeout(vm_uuid, timeout)
        self._remove(d)

    async def domain_reboot(self, vm_uuid: str, spec: DomainSpec | None = None, *,
                            clean: bool = True, timeout: float = 1200.0,
                            progress: Progress = None) -> int:
        d = self._dom(vm_uuid)
        if d.state == "building" or (clean and d.state != "running"):
            raise DomainStateError(vm_uuid, "Running", d.power_state)
        new_spec = dict(spec) if spec is not None else dict(d.spec)
        memory, static_max, _, vcpus_max = self._sizes(new_spec)
        needed = memory + self.memory_overhead(static_max, vcpus_max)
        free = self._free_memory() + d.footprint
        if needed > free:
            raise InsufficientMemory(needed, free)
        prev_state = d.state
        d.state = "shutting_down"
        try:
            done = await self._work("reboot" if clean else "hard_reboot", progress,
                                    limit=timeout if clean else None)
        except BaseException:
            if d.state == "shutting_down":
                d.state = prev_state
            raise
        if self._domains.get(vm_uuid) is not d:
            raise NoSuchDomain(vm_uuid)             # destroyed meanwhile
        if not done:
            d.state = prev_state
            raise DomainTimeout(vm_uuid, timeout)
        self._remove(d)
        nd = await self._build(vm_uuid, new_spec, paused=False, op=None, progress=None)
        return nd.domid

    async def domain_pause(self, vm_uuid: str) -> None:
        d = self._dom(vm_uuid)
        if d.state != "running":
            raise DomainStateError(vm_uuid, "Running", d.power_state)
        await self._work("pause")
        d.state = "paused"

    async def domain_unpause(self, vm_uuid: str) -> None:
        d = self._dom(vm_uuid)
        if d.state != "paused":
            raise DomainStateError(vm_uuid, "Paused",
                                   "Halted" if d.state == "building" else d.power_state)
        await self._work("unpause")
        d.state = "running"
        self._spawn_agent(d)

    async def domain_suspend(self, vm_uuid: str, sr_uuid: str, location: str, *,
                             progress: Progress = None) -> None:
        d = self._dom(vm_uuid)
        if d.state != "running":
            raise DomainStateError(vm_uuid, "Running", d.power_state)
        sr = self._sr(sr_uuid)
        node = sr.get(location)
        image = d.memory
        if node.virtual_size < image:
            raise BackendError("VDI_TOO_SMALL", location, image)
        for other, _ in self._users_of(sr_uuid, location):
            raise VDIInUse(location, "suspend")
        if sr.thin:
            sr.need(max(0, image - node.allocated))
        d.state = "suspending"
        try:
            await self._work("suspend", progress)
        except BaseException:
            if d.state == "suspending":
                d.state = "running"
            raise
        if self._domains.get(vm_uuid) is not d:
            raise NoSuchDomain(vm_uuid)
        node = sr.get(location)
        if sr.thin:
            sr.need(max(0, image - node.allocated))
        node.allocated = max(node.allocated, min(node.virtual_size, image))
        node.suspend_image_of = vm_uuid
        node.vdi_type = "suspend"
        self._remove(d)
        self._save_storage()

    async def domain_resume(self, vm_uuid: str, spec: DomainSpec, sr_uuid: str, location: str,
                            *, paused: bool = False, progress: Progress = None) -> int:
        if vm_uuid in self._domains:
            raise DomainStateError(vm_uuid, "Suspended", self._domains[vm_uuid].power_state)
        node = self._sr(sr_uuid).get(location)
        if node.suspend_image_of != vm_uuid:
            raise BackendError("INTERNAL_ERROR",
                               f"no suspend image of VM {vm_uuid} at {sr_uuid}/{location}")
        d = await self._build(vm_uuid, dict(spec), paused=paused, op="resume",
                              progress=progress)
        return d.domid

    async def domain_destroy(self, vm_uuid: str) -> None:
        d = self._domains.get(vm_uuid)
        if d is None:
            return
        self._remove(d)
        await self._work("destroy")

    async def domain_list(self) -> dict[str, DomainState]:
        return {u: {"domid": d.domid, "power_state": d.power_state}
                for u, d in self._domains.items()}

    async def domain_metrics(self, vm_uuid: str) -> dict:
        d = self._dom(vm_uuid)
        rng = random.Random(d.domid * 7919 + int(time.monotonic() / 5))
        up = time.monotonic() - d.started_mono
        util = {}
        for i in range(d.vcpus):
            if d.state in ("paused", "building"):
                u = 0.0
            elif up < 30:
                u = rng.uniform(0.25, 0.65)          # booting
            else:
                u = rng.uniform(0.005, 0.06)         # idle guest
            util[str(i)] = round(u, 4)
        return {
            "domid": d.domid,
            "power_state": d.power_state,
            "memory_actual": d.memory,
            "vcpus_number": d.vcpus,
            "vcpus_utilisation": util,
            "vcpus_cpu": {str(i): (d.domid * 3 + i * 2) % self.cpu_count
                          for i in range(d.vcpus)},
            "vcpus_params": {},
            "vcpus_flags": {str(i): ["online"] for i in range(d.vcpus)},
            "start_time": d.start_time,
            "state": ["paused"] if d.power_state == "Paused" else ["running"],
            "hvm": True,
            "nested_virt": False,
            "nomigrate": False,
            "current_domain_type": "hvm",
            "last_updated": _now(),
        }

    async def domain_guest_metrics(self, vm_uuid: str) -> dict | None:
        d = self._dom(vm_uuid)
        if d.guest is None:
            return None
        g = dict(d.guest)
        for k in ("os_version", "PV_drivers_version", "networks", "other", "disks", "memory",
                  "netbios_name"):
            g[k] = dict(g[k])
        return g

    async def domain_console(self, vm_uuid: str) -> dict | None:
        d = self._dom(vm_uuid)
        return {"protocol": "rfb", "port": 5900 + d.domid}

    def _live(self, vm_uuid: str) -> Domain:
        d = self._dom(vm_uuid)
        if d.state == "building":
            raise DomainStateError(vm_uuid, "Running", "Halted")
        return d

    async def domain_attach_disk(self, vm_uuid: str, disk: DiskSpec) -> str:
        d = self._live(vm_uuid)
        disk = self._check_disk(vm_uuid, disk, "plug")
        if disk["device"] in d.disks:
            raise BackendError("DEVICE_ALREADY_ATTACHED", disk["device"])
        await self._work("attach_disk")
        if self._domains.get(vm_uuid) is not d:
            raise NoSuchDomain(vm_uuid)
        if disk["device"] in d.disks:
            raise BackendError("DEVICE_ALREADY_ATTACHED", disk["device"])
        d.disks[disk["device"]] = disk
        return device_name(disk["device"])

    async def domain_detach_disk(self, vm_uuid: str, device: str) -> None:
        d = self._live(vm_uuid)
        device = str(device)
        if device not in d.disks:
            raise BackendError("DEVICE_ALREADY_DETACHED", device)
        await self._work("detach_disk")
        d.disks.pop(device, None)

    async def domain_attach_nic(self, vm_uuid: str, nic: NicSpec) -> None:
        d = self._live(vm_uuid)
        nic = dict(nic)
        nic["device"] = str(nic.get("device", "0"))
        if nic["device"] in d.nics:
            raise BackendError("DEVICE_ALREADY_ATTACHED", nic["device"])
        await self._work("attach_nic")
        if self._domains.get(vm_uuid) is not d:
            raise NoSuchDomain(vm_uuid)
        d.nics[nic["device"]] = nic
        self._refresh_guest_networks(d)

    async def domain_detach_nic(self, vm_uuid: str, device: str) -> None:
        d = self._live(vm_uuid)
        device = str(device)
        if device not in d.nics:
            raise BackendError("DEVICE_ALREADY_DETACHED", device)
        await self._work("detach_nic")
        d.nics.pop(device, None)
        self._refresh_guest_networks(d)

    async def domain_insert_cd(self, vm_uuid: str, device: str, sr_uuid: str,
                               location: str) -> None:
        d = self._live(vm_uuid)
        cd_drive(d.disks.get(str(device)), device, needs_media=False)
        self._sr(sr_uuid).get(location)
        await self._work("insert_cd")
        # checked again: another insert may have won while this one waited
        disk = cd_drive(d.disks.get(str(device)), device, needs_media=False)
        disk.update(sr=sr_uuid, location=location, mode="RO")

    async def domain_eject_cd(self, vm_uuid: str, device: str) -> None:
        d = self._live(vm_uuid)
        disk = cd_drive(d.disks.get(str(device)), device, needs_media=True)
        await self._work("eject_cd")
        disk.update(sr=None, location=None)

    async def domain_set_memory(self, vm_uuid: str, target: int) -> None:
        d = self._live(vm_uuid)
        target = int(target)
        if target <= 0:
            raise BackendError("INVALID_VALUE", "memory_target", target)
        grow = target - d.memory
        free = self._free_memory()
        if grow > free:
            raise InsufficientMemory(grow, free)
        await self._work("set_memory")
        d.memory = target

    async def domain_set_vcpus(self, vm_uuid: str, vcpus: int) -> None:
        d = self._live(vm_uuid)
        vcpus = int(vcpus)
        if not 1 <= vcpus <= d.vcpus_max:
            raise BackendError("INVALID_VALUE", "VCPUs_number", vcpus)
        await self._work("set_vcpus")
        d.vcpus = vcpus

    # SysRq keys and triggers whose effect a guest shows: it goes down by itself, as on Xen
    _SYSRQ_STOPS = {"b": "reboot", "o": "halt", "c": "crash"}
    _TRIGGER_STOPS = {"reset": "reboot", "power": "halt"}

    async def domain_send_sysrq(self, vm_uuid: str, key: str) -> None:
        self._stop_later(self._live(vm_uuid), self._SYSRQ_STOPS.get(key))

    async def domain_send_trigger(self, vm_uuid: str, trigger: str) -> None:
        self._stop_later(self._live(vm_uuid), self._TRIGGER_STOPS.get(trigger))

    def _stop_later(self, d: Domain, reason: str | None) -> None:
        """The guest reacts after the call returns, as a real one does."""
        if reason is None or d.state == "paused":
            return

        async def stop():
            if self._domains.get(d.vm_uuid) is d:
                await self.simulate_guest_stop(d.vm_uuid, reason)

        task = asyncio.get_running_loop().create_task(stop())
        self._reactions.add(task)
        task.add_done_callback(self._reactions.discard)

    # ---- simulator-only hooks ------------------------------------------------------------

    async def simulate_guest_stop(self, vm_uuid: str, reason: str = "halt") -> None:
        """The guest halts ("halt"), reboots ("reboot") or crashes ("crash") by itself: the
        domain goes away and a "stopped" event is emitted."""
        if reason not in ("halt", "reboot", "crash"):
            raise ValueError(reason)
        d = self._dom(vm_uuid)
        self._remove(d)
        await self.emit({"kind": "stopped", "vm_uuid": vm_uuid, "domid": d.domid,
                         "reason": reason})

    async def simulate_guest_write(self, sr_uuid: str, location: str, nbytes: int) -> None:
        """A guest writes ``nbytes`` of new data to a disk (thin disks grow; SR_FULL)."""
        self._sr(sr_uuid).write(location, nbytes)
        self._save_storage()

    # ================================================================ storage

    def supported_sr_types(self) -> list[str]:
        return list(SR_TYPES)

    def _sr_info(self, sr: SimSR) -> SrInfo:
        return {
            "physical_size": sr.physical_size,
            "physical_utilisation": sr.utilisation(),
            "virtual_allocation": sr.virtual_allocation(),
            "content_type": "iso" if sr.iso else "user",
            "sm_config": {"allocation": "thin" if sr.thin else "thick"} if not sr.iso else {},
        }

    async def sr_create(self, sr_uuid: str, sr_type: str, device_config: dict, *,
                        physical_size: int = 0) -> SrInfo:
        old = self._srs.get(sr_uuid)
        if old is not None and any(self._users_of(sr_uuid, loc) for loc in old.nodes):
            raise BackendError("SR_DEVICE_IN_USE")
        sr = make_sr(sr_uuid, sr_type, device_config or {}, physical_size)
        await self._work("sr_create")
        self._srs[sr_uuid] = sr
        self._save_storage()
        return self._sr_info(sr)

    async def sr_attach(self, sr_uuid: str, sr_type: str, device_config: dict) -> SrInfo:
        sr = self._srs.get(sr_uuid)
        if sr is not None and sr.type != sr_type:
            raise BackendError("SR_UNKNOWN_DRIVER", sr_type)
        if sr is None:
            sr = make_sr(sr_uuid, sr_type, device_config or {})
        await self._work("sr_attach")
        sr.attached = True
        self._srs[sr_uuid] = sr
        self._save_storage()
        return self._sr_info(sr)

    async def sr_detach(self, sr_uuid: str) -> None:
        sr = self._sr(sr_uuid)
        for loc in sr.nodes:
            if self._users_of(sr_uuid, loc):
                raise VDIInUse(loc, "sr_detach")
        await self._work("sr_detach")
        sr.attached = False

    async def sr_destroy(self, sr_uuid: str) -> None:
        sr = self._srs.get(sr_uuid)
        if sr is None:
            return
        if not sr.iso and any(not n.hidden for n in sr.nodes.values()):
            raise BackendError("SR_NOT_EMPTY")
        await self._work("sr_destroy")
        self._srs.pop(sr_uuid, None)
        self._save_storage()

    async def sr_scan(self, sr_uuid: str) -> list[VdiInfo]:
        sr = self._sr(sr_uuid)
        await self._work("sr_scan")
        return [sr.info(n) for n in sr.nodes.values() if not n.hidden and not n.pending]

    async def sr_usage(self, sr_uuid: str) -> SrInfo:
        return self._sr_info(self._sr(sr_uuid))

    async def vdi_create(self, sr_uuid: str, virtual_size: int, *, vdi_type: str = "user",
                         sharable: bool = False, read_only: bool = False,
                         progress: Progress = None) -> VdiInfo:
        sr = self._sr(sr_uuid)
        node = sr.create(int(virtual_size), vdi_type=vdi_type, sharable=sharable,
                         read_only=read_only, pending=True)
        try:
            await self._work("vdi_create", progress)
        except BaseException:
            sr.remove(node.location)
            raise
        node.pending = False
        self._save_storage()
        return sr.info(node)

    async def vdi_info(self, sr_uuid: str, location: str) -> VdiInfo:
        sr = self._sr(sr_uuid)
        return sr.info(sr.get(location))

    async def vdi_destroy(self, sr_uuid: str, location: str, *,
                          progress: Progress = None) -> None:
        sr = self._sr(sr_uuid)
        sr.check_writable()
        sr.get(location)
        if self._users_of(sr_uuid, location):
            raise VDIInUse(location, "destroy")
        await self._work("vdi_destroy", progress)
        if self._users_of(sr_uuid, location):
            raise VDIInUse(location, "destroy")
        sr.remove(location)
        self._save_storage()

    async def _duplicate(self, op: str, sr_uuid: str, location: str, read_only: bool,
                         progress: Progress) -> VdiInfo:
        sr = self._sr(sr_uuid)
        sr.check_writable()
        sr.get(location)
        await self._work(op, progress)
        # the change is made at the end, in one step: a cancelled call changes nothing
        node = sr.duplicate(location, read_only=read_only)
        self._save_storage()
        return sr.info(node)

    async def vdi_clone(self, sr_uuid: str, location: str, *,
                        progress: Progress = None) -> VdiInfo:
        return await self._duplicate("vdi_clone", sr_uuid, location, False, progress)

    async def vdi_snapshot(self, sr_uuid: str, location: str, *,
                           progress: Progress = None) -> VdiInfo:
        return await self._duplicate("vdi_snapshot", sr_uuid, location, False, progress)

    async def vdi_copy(self, src_sr_uuid: str, location: str, dst_sr_uuid: str, *,
                       dst_location: str | None = None, progress: Progress = None) -> VdiInfo:
        src_sr = self._sr(src_sr_uuid)
        dst_sr = self._sr(dst_sr_uuid)
        dst_sr.check_writable()
        src = src_sr.get(location)
        data = src_sr.data_of(src)
        if dst_location is not None:
            target = dst_sr.get(dst_location)
            if target.virtual_size < src.virtual_size:
                raise BackendError("VDI_TOO_SMALL", dst_location, src.virtual_size)
            if self._users_of(dst_sr_uuid, dst_location):
                raise VDIInUse(dst_location, "copy")
            if dst_sr.thin:
                dst_sr.need(max(0, data - dst_sr.data_of(target)))
            await self._work("vdi_copy", progress)
            target = dst_sr.get(dst_location)
            grow = max(0, data - dst_sr.data_of(target))
            if dst_sr.thin:
                dst_sr.need(grow)
            target.allocated = min(target.virtual_size, target.allocated + grow)
            self._save_storage()
            return dst_sr.info(target)
        node = dst_sr.add_copy(src.virtual_size, data, vdi_type=src.vdi_type, pending=True)
        try:
            await self._work("vdi_copy", progress)
        except BaseException:
            dst_sr.remove(node.location)
            raise
        node.pending = False
        self._save_storage()
        return dst_sr.info(node)

    async def vdi_resize(self, sr_uuid: str, location: str, new_size: int, *,
                         progress: Progress = None) -> VdiInfo:
        sr = self._sr(sr_uuid)
        sr.check_writable()
        node = sr.get(location)
        if int(new_size) < node.virtual_size:
            raise BackendError("VDI_TOO_SMALL", location, node.virtual_size)
        await self._work("vdi_resize", progress)
        node = sr.resize(location, int(new_size))
        self._save_storage()
        return sr.info(node)


__all__ = ["SimulatorBackend", "DELAY_KEYS", "parse_delays", "normalise_delays"]
