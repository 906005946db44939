"""The QEMU backend: a running VM is a QEMU process, a VDI is a qcow2 file, a console is VNC.

* One QEMU per running VM, in its own session, driven over QMP (:mod:`qemu.qmp`); see
  :mod:`.machine` for its files under ``<state_dir>/qemu/<vm uuid>/``.  QEMU is always started
  with ``-S`` and let go with ``cont``, so the event watcher is in place before the guest runs.
* QMP events: SHUTDOWN/GUEST_PANICKED that the server did not ask for become "stopped" events
  (halt / reboot / crash; a QEMU that dies without a word counts as halted), STOP/RESUME that it
  did not ask for become "paused"/"running".
* Clean shutdown presses the ACPI power button (again every few seconds, in case the guest was
  not yet listening); reboot is a shutdown plus a fresh start (new domid), as the interface asks.
* Suspend streams QEMU's migration into the suspend VDI's file (``fd:`` migration, no shell);
  resume starts the same command line with ``-incoming`` on that file.
* After a server restart :meth:`QemuBackend.open` takes over the QEMUs still alive (pidfile +
  QMP); the ones that died are forgotten, so ``domain_list`` reports them Halted.
* Storage: :mod:`.storage` (directory SRs of qcow2 files, ISO SRs).
* NICs carry their VIF's MAC; user-mode networking with ``restrict=on`` (the guest reaches
  nothing), or a tap in the network's bridge when that bridge exists on the host (root only).
* Consoles: VNC on ``vnc.sock``; the serial console is logged to ``serial.log``
  (:meth:`QemuBackend.serial_log`) and served on ``serial.sock``.
* Accelerator: :mod:`.accel` (KVM only when it really boots, else TCG).

Options (``make_backend("qemu", state_dir, **options)``): ``accel`` ("auto" | "kvm" | "tcg",
default ``$PYXAPI_QEMU_ACCEL`` or auto), ``probe_guest`` ((kernel, initrd[, marker]) booted to
decide KVM, default ``$PYXAPI_QEMU_PROBE_GUEST`` as "kernel:initrd"), ``hostname``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid as _uuid
from pathlib import Path

from pyxapi.backends.base import (
    Backend, BackendError, DiskSpec, DomainSpec, DomainState, DomainStateError, DomainTimeout,
    GiB, InsufficientMemory, MiB, NicSpec, NoSuchDomain, NoSuchSR, Progress, SrInfo, VDIInUse,
    VdiInfo, cd_drive, device_name, report, round_up,
)
from pyxapi.backends.qemu import accel as _accel
from pyxapi.backends.qemu import storage as _storage
from pyxapi.backends.qemu.machine import (
    Machine, command_line, host_bridge, now, pid_alive, plug_tap, tap_name,
)

log = logging.getLogger(__name__)

POWERDOWN_REPEAT = 5.0      # seconds between ACPI power button presses of a clean shutdown
HOTPLUG_TIMEOUT = 10.0


def _mem_info() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[key] = int(parts[0]) * 1024
    return out


def _cpu_info() -> dict:
    info: dict = {}
    count = 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    count += 1
                elif count == 1 and key:
                    info[key] = value
    except OSError:
        pass
    info["count"] = count or os.cpu_count() or 1
    return info


def _read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _host_nics() -> list[dict]:
    """The host's physical NICs as PIF facts (bridge xenbrN by their order, as on XCP-ng)."""
    try:
        names = sorted(n for n in os.listdir("/sys/class/net")
                       if os.path.exists(f"/sys/class/net/{n}/device"))
    except OSError:
        return []
    addrs, default_dev = {}, ""
    try:
        out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True,
                             timeout=5).stdout
        for link in json.loads(out or "[]"):
            for a in link.get("addr_info", []):
                addrs.setdefault(link["ifname"], a)
        routes = subprocess.run(["ip", "-j", "route", "show", "default"], capture_output=True,
                                text=True, timeout=5).stdout
        default = (json.loads(routes or "[]") or [{}])[0]
        default_dev, gateway = default.get("dev", ""), default.get("gateway", "")
    except (OSError, ValueError, subprocess.SubprocessError):
        gateway = ""
    nics = []
    for i, name in enumerate(names):
        base = f"/sys/class/net/{name}"
        a = addrs.get(name, {})
        prefix = int(a.get("prefixlen", 0) or 0)
        netmask = str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask) if a else ""
        speed = int(_read(f"{base}/speed", "0") or 0)
        nics.append({
            "device": name, "mac": _read(f"{base}/address"),
            "mtu": int(_read(f"{base}/mtu", "1500") or 1500), "bridge": f"xenbr{i}",
            "speed": max(0, speed), "duplex": _read(f"{base}/duplex") != "half",
            "vendor": "", "model": "", "carrier": _read(f"{base}/carrier", "0") == "1",
            "management": name == default_dev, "ip": a.get("local", ""), "netmask": netmask,
            "gateway": gateway if name == default_dev else "", "dns": ""})
    return nics


class QemuBackend(Backend):
    name = "qemu"

    def __init__(self, state_dir: str | os.PathLike | None = None, *, accel: str | None = None,
                 probe_guest: tuple | None = None, hostname: str | None = None, **_ignored):
        super().__init__()
        self.state_dir = Path(state_dir) if state_dir else Path(
            tempfile.mkdtemp(prefix="pyxapi-qemu-"))
        self.root = self.state_dir / "qemu"
        self.accel_choice = (accel or os.environ.get("PYXAPI_QEMU_ACCEL") or "auto").lower()
        if self.accel_choice not in _accel.ACCELS:
            raise ValueError(f"PYXAPI_QEMU_ACCEL must be one of {', '.join(_accel.ACCELS)}")
        env_probe = os.environ.get("PYXAPI_QEMU_PROBE_GUEST")
        self.probe_guest = probe_guest or (tuple(env_probe.split(":")) if env_probe else None)
        self.hostname = hostname or socket.gethostname()
        self.boot_time = now()
        self._accel: str | None = None
        self._machines: dict[str, Machine] = {}
        self._srs: dict[str, _storage.DirSR] = {}
        self._tasks: set[asyncio.Task] = set()

    # ================================================================ plumbing

    async def accel(self) -> str:
        if self._accel is None:
            self._accel = await _accel.choose(self.accel_choice, self.root, self.probe_guest)
        return self._accel

    def _spawn_task(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dom(self, vm_uuid: str) -> Machine:
        m = self._machines.get(vm_uuid)
        if m is None:
            raise NoSuchDomain(vm_uuid)
        return m

    def _live(self, vm_uuid: str) -> Machine:
        m = self._dom(vm_uuid)
        if m.state == "building":
            raise DomainStateError(vm_uuid, "Running", "Halted")
        return m

    @staticmethod
    def _power_state(m: Machine) -> str:
        return "Paused" if m.state in ("building", "paused") else "Running"

    def _new_domid(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        counter = self.root / "last-domid"
        try:
            last = int(counter.read_text())
        except (OSError, ValueError):
            last = 0
        used = {m.domid for m in self._machines.values()}
        domid = last + 1
        while domid in used:
            domid += 1
        counter.write_text(str(domid))
        return domid

    def _users_of(self, sr_uuid: str, location: str) -> list[tuple[Machine, dict]]:
        return [(m, d) for m in self._machines.values() for d in m.disks.values()
                if d.get("sr") == sr_uuid and d.get("location") == location]

    def _resolve_disk(self, vm_uuid: str, disk: dict, op: str) -> dict | None:
        """Check a DiskSpec and find its file: {"sr", "location", "path", "format", "node", …}
        (None for an empty CD drive)."""
        if disk.get("location") is None:
            if disk["type"] != "CD":
                raise BackendError("VBD_IS_EMPTY", disk["device"])
            return None
        sr = self._sr(disk["sr"])
        path = sr.file(disk["location"])
        meta = sr.meta().get(disk["location"], {})
        if meta.get("type") == "suspend":
            raise VDIInUse(disk["location"], op)
        rw = disk["mode"] == "RW" and disk["type"] != "CD"
        if rw:
            if sr.iso or meta.get("read_only"):
                raise BackendError("VDI_READONLY", disk["location"])
            if not meta.get("sharable"):
                for other, od in self._users_of(disk["sr"], disk["location"]):
                    if other.vm_uuid != vm_uuid and od.get("mode") == "RW":
                        raise VDIInUse(disk["location"], op)
        return {"sr": disk["sr"], "location": disk["location"], "path": str(path),
                "format": sr.format_of(disk["location"], {disk["location"]: meta}),
                "node": f"{'cd' if disk['type'] == 'CD' else 'disk'}{disk['device']}-"
                        f"{_uuid.uuid4().hex[:8]}",
                "type": disk["type"], "mode": disk["mode"] if rw else "RO"}

    @staticmethod
    def _norm_disk(disk: dict) -> dict:
        disk = dict(disk)
        disk["device"] = str(disk.get("device", "0"))
        disk.setdefault("type", "Disk")
        disk.setdefault("mode", "RO" if disk["type"] == "CD" else "RW")
        disk.setdefault("bootable", False)
        if disk.get("location") is None:
            disk["sr"] = None
        return disk

    def _prepare(self, vm_uuid: str, spec: dict, op: str) -> tuple[dict, dict]:
        """Normalise a spec, check memory and disks; (spec, resolved disks)."""
        spec = dict(spec)
        memory = int(spec.get("memory") or 0)
        if memory <= 0:
            raise BackendError("INVALID_VALUE", "memory", memory)
        spec["disks"] = [self._norm_disk(d) for d in spec.get("disks") or []]
        spec["nics"] = [dict(n, device=str(n.get("device", "0"))) for n in spec.get("nics") or []]
        static_max = max(memory, int(spec.get("memory_static_max") or memory))
        vcpus = max(1, int(spec.get("vcpus") or 1))
        needed = memory + self.memory_overhead(static_max, max(vcpus, int(spec.get("vcpus_max")
                                                                          or vcpus)))
        free = self._free_memory()
        if needed > free:
            raise InsufficientMemory(needed, free)
        disks = {}
        for d in spec["disks"]:
            if d["device"] in disks:
                raise BackendError("DEVICE_ALREADY_ATTACHED", d["device"])
            r = self._resolve_disk(vm_uuid, d, op)
            if r is not None:
                disks[d["device"]] = r
        return spec, disks

    async def _build(self, vm_uuid: str, spec: dict, *, paused: bool, op: str,
                     incoming: Path | None = None) -> Machine:
        """Start QEMU for a spec (a fresh boot, or a resume from ``incoming``)."""
        if vm_uuid in self._machines:
            m = self._machines[vm_uuid]
            raise DomainStateError(vm_uuid, "Suspended" if incoming else "Halted",
                                   self._power_state(m))
        spec, disks = self._prepare(vm_uuid, spec, op)
        m = Machine(vm_uuid, self.root / vm_uuid, 0, spec, "tcg", disks=disks,
                    nics={n["device"]: n for n in spec["nics"]})
        self._machines[vm_uuid] = m          # claimed: a second start fails at once
        fd = None
        try:
            m.accel = await self.accel()
            m.domid = self._new_domid()
            if incoming is not None:
                fd = os.open(incoming, os.O_RDONLY)
            argv = command_line(vm_uuid, spec, m.accel, disks, domid=m.domid,
                                incoming=f"fd:{fd}" if fd is not None else None,
                                log_append=incoming is not None)
            m.spawn(argv, pass_fds=(fd,) if fd is not None else ())
            if fd is not None:
                os.close(fd)
                fd = None
            await m.connect()
            m.watcher = asyncio.get_running_loop().create_task(self._watch(m))
            for nic in spec["nics"]:
                plug_tap(m.domid, nic)
            if incoming is not None:
                await self._wait_incoming(m)
            m.start_time = now()
            m.save()
            if paused:
                m.state = "paused"
            else:
                m.state = "running"
                await m.execute("cont")
        except BaseException:
            if fd is not None:
                os.close(fd)
            await self._discard(m)
            raise
        return m

    async def _wait_incoming(self, m: Machine, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = (await m.execute("query-status"))["status"]
            if status != "inmigrate":
                return
            if time.monotonic() > deadline:
                raise BackendError("INTERNAL_ERROR", "resume: QEMU did not load the image")
            await asyncio.sleep(0.05)

    async def _discard(self, m: Machine) -> None:
        """Get rid of a machine that failed to come up."""
        m.expected_stop = True
        m.kill()
        if m.watcher is not None:
            await m.wait_exit(15)
        else:
            await m.disconnect()
            await m.reap(5)
            self._forget(m)

    def _forget(self, m: Machine) -> None:
        if self._machines.get(m.vm_uuid) is m:
            del self._machines[m.vm_uuid]
        for name in ("machine.json", "pid", "qmp.sock", "serial.sock", "vnc.sock"):
            m.path(name).unlink(missing_ok=True)
        m.exited.set()

    # ---- events ------------------------------------------------------------------------------

    async def _watch(self, m: Machine) -> None:
        """Follow a machine's QMP events until QEMU goes, then forget it."""
        qmp = m.qmp
        with qmp.listener() as listener:
            reader = asyncio.get_running_loop().create_task(self._read_events(m, listener))
            try:
                while qmp.runstate.name == "RUNNING":
                    await qmp.runstate_changed()
            finally:
                reader.cancel()
            for event in listener.clear():
                self._on_event(m, event)
        await m.disconnect()
        await m.reap()
        self._forget(m)
        if not m.expected_stop:
            if m.panicked or m.shutdown_reason == "guest-panic":
                reason = "crash"
            elif m.shutdown_reason == "guest-reset":
                reason = "reboot"
            else:
                reason = "halt"
            log.info("VM %s stopped by itself (%s)", m.vm_uuid, m.shutdown_reason or "died")
            await self.emit({"kind": "stopped", "vm_uuid": m.vm_uuid, "domid": m.domid,
                             "reason": reason})

    async def _read_events(self, m: Machine, listener) -> None:
        async for event in listener:
            self._on_event(m, event)

    def _on_event(self, m: Machine, event: dict) -> None:
        name, data = event.get("event"), event.get("data") or {}
        if name == "SHUTDOWN":
            m.shutdown_reason = data.get("reason", "")
        elif name == "GUEST_PANICKED":
            m.panicked = True
        elif name in ("STOP", "RESUME"):
            # our own stop/cont set m.state first; anything else changed by itself
            new, kind = ("paused", "paused") if name == "STOP" else ("running", "running")
            if m.state in ("running", "paused") and m.state != new and not m.expected_stop:
                m.state = new
                self._spawn_task(self.emit({"kind": kind, "vm_uuid": m.vm_uuid,
                                            "domid": m.domid}))
        elif name == "RESET":
            log.info("VM %s reset", m.vm_uuid)

    # ================================================================ life cycle

    async def open(self) -> None:
        """Take over the QEMUs a previous server left running; forget the dead ones."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._load_srs()
        for d in sorted(self.root.iterdir()):
            if not (d / "machine.json").exists() or d.name in self._machines:
                continue
            try:
                m = Machine.load(d.name, d)
            except (OSError, ValueError, KeyError):
                log.exception("unreadable %s", d / "machine.json")
                continue
            m.pid = m.read_pid()
            if not m.pid or not pid_alive(m.pid, m.vm_uuid):
                log.info("VM %s: its QEMU is gone", m.vm_uuid)
                self._forget(m)
                continue
            try:
                await m.connect(timeout=5)
                status = (await m.execute("query-status"))["status"]
            except Exception as e:
                # alive but not ours to drive (another server holds its QMP?): leave it be
                log.error("VM %s: QEMU %d does not answer on QMP (%r); not taken over",
                          m.vm_uuid, m.pid, e)
                await m.disconnect()
                continue
            m.state = "running" if status == "running" else "paused"
            self._machines[m.vm_uuid] = m
            m.watcher = asyncio.get_running_loop().create_task(self._watch(m))
            log.info("VM %s: took over QEMU %d (%s)", m.vm_uuid, m.pid, status)

    async def close(self) -> None:
        """Stop watching; the QEMUs keep running for the next server."""
        for m in list(self._machines.values()):
            if m.watcher is not None:
                m.watcher.cancel()
        for m in list(self._machines.values()):
            if m.watcher is not None:
                try:
                    await m.watcher
                except BaseException:
                    pass
            await m.disconnect()
        for task in list(self._tasks):
            task.cancel()

    # ================================================================ host

    async def host_info(self) -> dict:
        cpu = _cpu_info()
        mem = _mem_info()
        total = mem.get("MemTotal", 0)
        count = int(cpu["count"])
        speed = cpu.get("cpu MHz", "0")
        cpus = [{"number": i, "vendor": cpu.get("vendor_id", ""),
                 "speed": int(float(speed or 0)), "modelname": cpu.get("model name", ""),
                 "family": int(cpu.get("cpu family", 0) or 0),
                 "model": int(cpu.get("model", 0) or 0),
                 "stepping": int(cpu.get("stepping", 0) or 0),
                 "flags": cpu.get("flags", ""), "features": ""} for i in range(count)]
        qemu_version = ""
        try:
            proc = await asyncio.create_subprocess_exec(
                "qemu-system-x86_64", "--version", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)
            out, _ = await proc.communicate()
            qemu_version = out.decode().split("\n")[0].split("version")[-1].strip().split()[0]
        except (OSError, IndexError):
            pass
        pifs = _host_nics()
        return {
            "hostname": self.hostname,
            "address": next((p["ip"] for p in pifs if p["management"] and p["ip"]),
                            "127.0.0.1"),
            "cpu_count": count,
            "socket_count": 1,
            "cpu_info": {"cpu_count": str(count), "socket_count": "1",
                         "vendor": cpu.get("vendor_id", ""), "speed": speed,
                         "modelname": cpu.get("model name", ""),
                         "family": cpu.get("cpu family", ""), "model": cpu.get("model", ""),
                         "stepping": cpu.get("stepping", ""), "flags": cpu.get("flags", "")},
            # the same facts flat, as bootstrap.ensure_host reads them
            "vendor": cpu.get("vendor_id", ""), "speed": speed,
            "modelname": cpu.get("model name", ""), "family": cpu.get("cpu family", "0"),
            "model": cpu.get("model", "0"), "stepping": cpu.get("stepping", "0"),
            "flags": cpu.get("flags", ""),
            "cpus": cpus,
            "memory_total": total,
            "memory_overhead": 0,
            "dom0_memory": self._dom0_memory(total),
            "dom0_vcpus": count,
            "software_version": {"pyxapi_backend": "qemu", "qemu": qemu_version,
                                 "accel": self._accel or self.accel_choice},
            "capabilities": ["hvm-3.0-x86_32", "hvm-3.0-x86_32p", "hvm-3.0-x86_64"],
            "sched_policy": "linux",
            "bios_strings": {},
            "cpu_configuration": {},
            "chipset_info": {},
            "pifs": pifs,
            "supported_sr_types": self.supported_sr_types(),
            "boot_time": self.boot_time,
        }

    @staticmethod
    def _dom0_memory(total: int) -> int:
        """What the host keeps for itself and the server: 1/8 of RAM, 512 MiB to 4 GiB."""
        return max(512 * MiB, min(4 * GiB, total // 8 // MiB * MiB))

    def _free_memory(self) -> int:
        total = _mem_info().get("MemTotal", 0)
        used = sum(round_up(int(m.spec.get("memory", 0)), MiB)
                   + self.memory_overhead(int(m.spec.get("memory_static_max")
                                              or m.spec.get("memory", 0)),
                                          int(m.spec.get("vcpus_max") or m.spec.get("vcpus") or 1))
                   for m in self._machines.values())
        return max(0, total - self._dom0_memory(total) - used)

    async def host_free_memory(self) -> int:
        return self._free_memory()

    # ================================================================ domains

    async def domain_start(self, vm_uuid: str, spec: DomainSpec, *, paused: bool = False,
                           progress: Progress = None) -> int:
        m = await self._build(vm_uuid, dict(spec), paused=paused, op="start")
        await report(progress, 1.0)
        return m.domid

    async def _quit(self, m: Machine) -> None:
        """Hard stop: QMP quit, SIGKILL if QEMU does not go."""
        m.expected_stop = True
        try:
            await asyncio.wait_for(m.execute("quit"), 5)
        except Exception:
            m.kill()
        if not await m.wait_exit(10):
            m.kill()
            await m.wait_exit(None)

    async def domain_shutdown(self, vm_uuid: str, *, clean: bool = True, timeout: float = 1200.0,
                              progress: Progress = None) -> None:
        m = self._live(vm_uuid)
        if not clean:
            await self._quit(m)
            await report(progress, 1.0)
            return
        if m.state != "running":
            raise DomainStateError(vm_uuid, "Running", self._power_state(m))
        m.expected_stop = True
        deadline = time.monotonic() + float(timeout)
        try:
            while True:
                try:
                    await m.execute("system_powerdown")
                except Exception:
                    pass                 # QEMU is already going
                left = deadline - time.monotonic()
                if await m.wait_exit(max(0.0, min(POWERDOWN_REPEAT, left))):
                    await report(progress, 1.0)
                    return
                if time.monotonic() >= deadline:
                    raise DomainTimeout(vm_uuid, timeout)
        except BaseException:
            if not m.exited.is_set():
                m.expected_stop = False
            raise

    async def domain_reboot(self, vm_uuid: str, spec: DomainSpec | None = None, *,
                            clean: bool = True, timeout: float = 1200.0,
                            progress: Progress = None) -> int:
        m = self._live(vm_uuid)
        if clean and m.state != "running":
            raise DomainStateError(vm_uuid, "Running", self._power_state(m))
        new_spec = dict(spec) if spec is not None else dict(m.spec)
        await self.domain_shutdown(vm_uuid, clean=clean, timeout=timeout)
        return await self.domain_start(vm_uuid, new_spec, progress=progress)

    async def domain_pause(self, vm_uuid: str) -> None:
        m = self._live(vm_uuid)
        if m.state != "running":
            raise DomainStateError(vm_uuid, "Running", self._power_state(m))
        m.state = "paused"
        try:
            await m.execute("stop")
        except BaseException:
            m.state = "running"
            raise

    async def domain_unpause(self, vm_uuid: str) -> None:
        m = self._dom(vm_uuid)
        if m.state != "paused":
            raise DomainStateError(vm_uuid, "Paused",
                                   "Halted" if m.state == "building" else self._power_state(m))
        m.state = "running"
        try:
            await m.execute("cont")
        except BaseException:
            m.state = "paused"
            raise

    async def domain_suspend(self, vm_uuid: str, sr_uuid: str, location: str, *,
                             progress: Progress = None) -> None:
        m = self._live(vm_uuid)
        if m.state != "running":
            raise DomainStateError(vm_uuid, "Running", self._power_state(m))
        sr = self._sr(sr_uuid)
        sr.check_writable()
        path = sr.file(location)
        if self._users_of(sr_uuid, location):
            raise VDIInUse(location, "suspend")
        info = sr.info(location)
        memory = round_up(int(m.spec["memory"]), MiB)
        if info["virtual_size"] < memory:
            raise BackendError("VDI_TOO_SMALL", location, memory)
        tmp = sr.path / f".tmp-{_uuid.uuid4()}.suspend"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        m.state = "paused"
        try:
            await m.execute("stop")
            await m.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40})
            m.send_fd(fd)
            await m.execute("getfd", {"fdname": "suspend"})
            await m.execute("migrate", {"uri": "fd:suspend"})
            while True:
                st = await m.execute("query-migrate")
                status = st.get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled"):
                    raise BackendError("INTERNAL_ERROR",
                                       f"suspend failed: {st.get('error-desc', status)}")
                ram = st.get("ram") or {}
                if ram.get("total"):
                    await report(progress, 0.95 * ram.get("transferred", 0) / ram["total"])
                await asyncio.sleep(0.05)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            if vm_uuid in self._machines and not m.exited.is_set():
                try:
                    await m.execute("migrate_cancel")
                    m.state = "running"
                    await m.execute("cont")
                except Exception:
                    log.exception("VM %s: could not resume after a failed suspend", vm_uuid)
            raise
        os.close(fd)
        await self._quit(m)
        os.replace(tmp, path)
        sr.set_meta(location, format="raw", type="suspend", virtual_size=info["virtual_size"],
                    suspend_image_of=vm_uuid)
        await report(progress, 1.0)

    async def domain_resume(self, vm_uuid: str, spec: DomainSpec, sr_uuid: str, location: str,
                            *, paused: bool = False, progress: Progress = None) -> int:
        if vm_uuid in self._machines:
            raise DomainStateError(vm_uuid, "Suspended",
                                   self._power_state(self._machines[vm_uuid]))
        sr = self._sr(sr_uuid)
        path = sr.file(location)
        if sr.meta().get(location, {}).get("suspend_image_of") != vm_uuid:
            raise BackendError("INTERNAL_ERROR",
                               f"no suspend image of VM {vm_uuid} at {sr_uuid}/{location}")
        m = await self._build(vm_uuid, dict(spec), paused=paused, op="resume", incoming=path)
        await report(progress, 1.0)
        return m.domid

    async def domain_destroy(self, vm_uuid: str) -> None:
        m = self._machines.get(vm_uuid)
        if m is None:
            return
        m.expected_stop = True
        m.kill()
        await m.wait_exit(None)

    async def domain_list(self) -> dict[str, DomainState]:
        return {u: {"domid": m.domid, "power_state": self._power_state(m)}
                for u, m in self._machines.items()}

    async def domain_metrics(self, vm_uuid: str) -> dict:
        m = self._live(vm_uuid)
        cpus = await m.execute("query-cpus-fast")
        threads = {str(c["cpu-index"]): c["thread-id"] for c in cpus}
        times = m.vcpu_times(threads)
        t = time.monotonic()
        if m.cpu_sample:
            t0, before = m.cpu_sample
        else:
            t0, before = t - max(1e-3, (now() - m.start_time).total_seconds()), {}
        span = max(1e-3, t - t0)
        util = {k: round(min(1.0, max(0.0, (v - before.get(k, 0.0)) / span)), 4)
                for k, v in times.items()}
        m.cpu_sample = (t, times)
        memory = round_up(int(m.spec["memory"]), MiB)
        try:
            memory = int((await m.execute("query-balloon"))["actual"])
        except Exception:
            pass
        power = self._power_state(m)
        return {
            "domid": m.domid,
            "power_state": power,
            "memory_actual": memory,
            "vcpus_number": len(threads),
            "vcpus_utilisation": util,
            "vcpus_cpu": {k: 0 for k in threads},
            "vcpus_params": {},
            "vcpus_flags": {k: ["online"] for k in threads},
            "start_time": m.start_time,
            "state": ["paused"] if power == "Paused" else ["running"],
            "hvm": True,
            "nested_virt": False,
            "nomigrate": False,
            "current_domain_type": "hvm",
            "last_updated": now(),
        }

    async def domain_guest_metrics(self, vm_uuid: str) -> dict | None:
        self._dom(vm_uuid)
        return None                      # no guest agent channel

    async def domain_console(self, vm_uuid: str) -> dict | None:
        m = self._live(vm_uuid)
        return {"protocol": "rfb", "path": str(m.path("vnc.sock"))}

    def serial_log(self, vm_uuid: str) -> Path:
        """The serial console log of a VM (its last boot; kept after it stops)."""
        return self.root / vm_uuid / "serial.log"

    def serial_socket(self, vm_uuid: str) -> Path:
        """The serial console of a running VM, a Unix socket one client may talk to."""
        return self._live(vm_uuid).path("serial.sock")

    # ---- devices -----------------------------------------------------------------------------

    async def _device_del(self, m: Machine, dev_id: str, kind: str) -> None:
        """Unplug a device; the guest must let it go (ACPI hotplug)."""
        with m.qmp.listener("DEVICE_DELETED") as listener:
            await m.execute("device_del", {"id": dev_id})
            deadline = time.monotonic() + HOTPLUG_TIMEOUT
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackendError("DEVICE_DETACH_TIMEOUT", kind, dev_id)
                try:
                    ev = await asyncio.wait_for(listener.get(), left)
                except asyncio.TimeoutError:
                    continue
                if (ev.get("data") or {}).get("device") == dev_id:
                    return

    async def domain_attach_disk(self, vm_uuid: str, disk: DiskSpec) -> str:
        m = self._live(vm_uuid)
        disk = self._norm_disk(disk)
        dev = disk["device"]
        if dev in m.disks or any(d["device"] == dev for d in m.spec["disks"]):
            raise BackendError("DEVICE_ALREADY_ATTACHED", dev)
        if disk["type"] == "CD":
            raise BackendError("OPERATION_NOT_ALLOWED",
                               "CD drives cannot be hot-plugged; insert media instead")
        r = self._resolve_disk(vm_uuid, disk, "plug")
        await m.execute("blockdev-add", {
            "driver": r["format"], "node-name": r["node"], "read-only": r["mode"] == "RO",
            "file": {"driver": "file", "filename": r["path"]}})
        try:
            await m.execute("device_add", {"driver": "virtio-blk-pci", "id": f"disk{dev}",
                                           "drive": r["node"]})
        except BaseException:
            await m.execute("blockdev-del", {"node-name": r["node"]})
            raise
        m.disks[dev] = r
        m.spec["disks"].append(disk)
        m.save()
        return device_name(dev)

    async def domain_detach_disk(self, vm_uuid: str, device: str) -> None:
        m = self._live(vm_uuid)
        device = str(device)
        spec_disk = next((d for d in m.spec["disks"] if d["device"] == device), None)
        if spec_disk is None:
            raise BackendError("DEVICE_ALREADY_DETACHED", device)
        if spec_disk["type"] == "CD":
            raise BackendError("OPERATION_NOT_ALLOWED",
                               "CD drives cannot be hot-unplugged; eject instead")
        await self._device_del(m, f"disk{device}", "vbd")
        r = m.disks.pop(device, None)
        if r is not None:
            try:
                await m.execute("blockdev-del", {"node-name": r["node"]})
            except Exception:
                log.exception("blockdev-del %s", r["node"])
        m.spec["disks"] = [d for d in m.spec["disks"] if d["device"] != device]
        m.save()

    async def domain_attach_nic(self, vm_uuid: str, nic: NicSpec) -> None:
        m = self._live(vm_uuid)
        nic = dict(nic, device=str(nic.get("device", "0")))
        dev = nic["device"]
        if dev in m.nics:
            raise BackendError("DEVICE_ALREADY_ATTACHED", dev)
        if host_bridge(nic.get("bridge")):
            await m.execute("netdev_add", {"type": "tap", "id": f"net{dev}", "script": "no",
                                           "downscript": "no",
                                           "ifname": tap_name(m.domid, dev)})
            plug_tap(m.domid, nic)
        else:
            await m.execute("netdev_add", {"type": "user", "id": f"net{dev}", "restrict": True})
        args = {"driver": "virtio-net-pci", "id": f"nic{dev}", "netdev": f"net{dev}"}
        if nic.get("mac"):
            args["mac"] = nic["mac"]
        try:
            await m.execute("device_add", args)
        except BaseException:
            await m.execute("netdev_del", {"id": f"net{dev}"})
            raise
        m.nics[dev] = nic
        m.spec["nics"].append(nic)
        m.save()

    async def domain_detach_nic(self, vm_uuid: str, device: str) -> None:
        m = self._live(vm_uuid)
        device = str(device)
        if device not in m.nics:
            raise BackendError("DEVICE_ALREADY_DETACHED", device)
        await self._device_del(m, f"nic{device}", "vif")
        await m.execute("netdev_del", {"id": f"net{device}"})
        m.nics.pop(device)
        m.spec["nics"] = [n for n in m.spec["nics"] if n["device"] != device]
        m.save()

    def _cd(self, m: Machine, device: str, *, needs_media: bool) -> dict:
        disk = next((d for d in m.spec["disks"] if d["device"] == str(device)), None)
        return cd_drive(disk, device, needs_media=needs_media)

    async def domain_insert_cd(self, vm_uuid: str, device: str, sr_uuid: str,
                               location: str) -> None:
        m = self._live(vm_uuid)
        disk = self._cd(m, device, needs_media=False)
        r = self._resolve_disk(vm_uuid, dict(disk, sr=sr_uuid, location=location), "insert")
        await m.execute("blockdev-change-medium", {
            "id": f"cd{disk['device']}", "filename": r["path"], "format": r["format"],
            "read-only-mode": "read-only"})
        disk.update(sr=sr_uuid, location=location)
        m.disks[disk["device"]] = r
        m.save()

    async def domain_eject_cd(self, vm_uuid: str, device: str) -> None:
        m = self._live(vm_uuid)
        disk = self._cd(m, device, needs_media=True)
        await m.execute("eject", {"id": f"cd{disk['device']}", "force": True})
        disk.update(sr=None, location=None)
        m.disks.pop(disk["device"], None)
        m.save()

    async def domain_set_memory(self, vm_uuid: str, target: int) -> None:
        m = self._live(vm_uuid)
        target = int(target)
        static_max = int(m.spec.get("memory_static_max") or m.spec["memory"])
        if not 0 < target <= max(static_max, int(m.spec["memory"])):
            raise BackendError("INVALID_VALUE", "memory_target", target)
        await m.execute("balloon", {"value": target})

    # QMP commands for VM.send_trigger; "init" and "sleep" have none
    _TRIGGERS = {"nmi": "inject-nmi", "reset": "system_reset", "power": "system_powerdown",
                 "s3resume": "system_wakeup"}

    async def domain_send_sysrq(self, vm_uuid: str, key: str) -> None:
        m = self._live(vm_uuid)
        await m.execute("send-key", {"keys": [{"type": "qcode", "data": k}
                                              for k in ("alt", "sysrq", key)]})

    async def domain_send_trigger(self, vm_uuid: str, trigger: str) -> None:
        m = self._live(vm_uuid)
        command = self._TRIGGERS.get(trigger)
        if command is None:
            raise BackendError("NOT_IMPLEMENTED", "send_trigger")
        await m.execute(command)

    async def domain_set_vcpus(self, vm_uuid: str, vcpus: int) -> None:
        m = self._live(vm_uuid)
        vcpus = int(vcpus)
        vcpus_max = int(m.spec.get("vcpus_max") or m.spec.get("vcpus") or 1)
        if not 1 <= vcpus <= vcpus_max:
            raise BackendError("INVALID_VALUE", "VCPUs_number", vcpus)
        slots = await m.execute("query-hotpluggable-cpus")
        online = sorted((s for s in slots if s.get("qom-path")),
                        key=lambda s: s["props"].get("core-id", 0))
        free = sorted((s for s in slots if not s.get("qom-path")),
                      key=lambda s: s["props"].get("core-id", 0))
        for slot in free[:max(0, vcpus - len(online))]:
            props = dict(slot["props"])
            await m.execute("device_add", {"driver": slot["type"],
                                           "id": f"vcpu{props.get('core-id', 0)}", **props})
        for slot in reversed(online[vcpus:]):
            dev_id = slot["qom-path"].rsplit("/", 1)[-1]
            if not dev_id.startswith("vcpu"):
                raise BackendError("OPERATION_NOT_ALLOWED",
                                   "VCPUs present at start cannot be unplugged")
            await self._device_del(m, dev_id, "vcpu")

    # ================================================================ storage

    def supported_sr_types(self) -> list[str]:
        return list(_storage.SR_TYPES)

    def _registry_path(self) -> Path:
        return self.root / "srs.json"

    def _registry(self) -> dict:
        try:
            return json.loads(self._registry_path().read_text())
        except (OSError, ValueError):
            return {}

    def _save_registry(self, reg: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._registry_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(reg, indent=1, sort_keys=True))
        os.replace(tmp, self._registry_path())

    def _load_srs(self) -> None:
        """SRs stay attached across restarts (the server re-attaches them anyway)."""
        for uuid, e in self._registry().items():
            if e.get("attached"):
                self._srs[uuid] = _storage.DirSR(uuid, e["type"], Path(e["path"]),
                                                 e.get("physical_size", 0))

    def _sr(self, sr_uuid: str) -> _storage.DirSR:
        sr = self._srs.get(sr_uuid)
        if sr is None:
            raise NoSuchSR(sr_uuid)
        return sr

    def _sr_path(self, sr_uuid: str, device_config: dict) -> Path:
        loc = (device_config or {}).get("location") or (device_config or {}).get("path")
        return Path(loc) if loc else self.state_dir / "sr" / sr_uuid

    def _register(self, sr: _storage.DirSR, attached: bool) -> None:
        reg = self._registry()
        reg[sr.uuid] = {"type": sr.type, "path": str(sr.path),
                        "physical_size": sr.physical_size, "attached": attached}
        self._save_registry(reg)

    async def sr_create(self, sr_uuid: str, sr_type: str, device_config: dict, *,
                        physical_size: int = 0) -> SrInfo:
        if sr_type not in _storage.SR_TYPES:
            raise BackendError("SR_UNKNOWN_DRIVER", sr_type)
        old = self._srs.get(sr_uuid)
        if old is not None and any(self._users_of(sr_uuid, loc) for loc in old.locations()):
            raise BackendError("SR_DEVICE_IN_USE")
        path = self._sr_path(sr_uuid, device_config)
        if sr_type not in _storage.ISO_TYPES:       # an ISO library is never made, only read
            path.mkdir(parents=True, exist_ok=True)
        sr = _storage.DirSR(sr_uuid, sr_type, path, physical_size)
        sr.wipe()
        self._srs[sr_uuid] = sr
        self._register(sr, True)
        return sr.usage()

    async def sr_attach(self, sr_uuid: str, sr_type: str, device_config: dict) -> SrInfo:
        if sr_type not in _storage.SR_TYPES:
            raise BackendError("SR_UNKNOWN_DRIVER", sr_type)
        sr = self._srs.get(sr_uuid)
        if sr is not None:
            if sr.type != sr_type:
                raise BackendError("SR_UNKNOWN_DRIVER", sr_type)
            return sr.usage()
        entry = self._registry().get(sr_uuid)
        path = Path(entry["path"]) if entry and not (device_config or {}).get("location") \
            else self._sr_path(sr_uuid, device_config)
        if not path.is_dir() and sr_type not in _storage.ISO_TYPES:
            if (device_config or {}).get("location"):
                raise BackendError("SR_BACKEND_FAILURE", 1, "", f"no such directory: {path}")
            path.mkdir(parents=True, exist_ok=True)
        sr = _storage.DirSR(sr_uuid, sr_type, path, (entry or {}).get("physical_size", 0))
        self._srs[sr_uuid] = sr
        self._register(sr, True)
        return sr.usage()

    async def sr_detach(self, sr_uuid: str) -> None:
        sr = self._sr(sr_uuid)
        for loc in sr.locations():
            if self._users_of(sr_uuid, loc):
                raise VDIInUse(loc, "sr_detach")
        del self._srs[sr_uuid]
        self._register(sr, False)

    async def sr_destroy(self, sr_uuid: str) -> None:
        entry = self._registry().get(sr_uuid)
        sr = self._srs.get(sr_uuid) or (entry and _storage.DirSR(
            sr_uuid, entry["type"], Path(entry["path"])))
        if not sr:
            return
        if not sr.iso and sr.path.is_dir() and sr.locations():
            raise BackendError("SR_NOT_EMPTY")
        if not sr.iso and sr.path == self.state_dir / "sr" / sr_uuid:
            shutil.rmtree(sr.path, ignore_errors=True)      # a directory we made
        elif not sr.iso and sr.path.is_dir():
            sr.wipe()
        self._srs.pop(sr_uuid, None)
        reg = self._registry()
        reg.pop(sr_uuid, None)
        self._save_registry(reg)

    async def sr_scan(self, sr_uuid: str) -> list[VdiInfo]:
        return self._sr(sr_uuid).scan()

    async def sr_usage(self, sr_uuid: str) -> SrInfo:
        return self._sr(sr_uuid).usage()

    async def vdi_create(self, sr_uuid: str, virtual_size: int, *, vdi_type: str = "user",
                         sharable: bool = False, read_only: bool = False,
                         progress: Progress = None) -> VdiInfo:
        info = await self._sr(sr_uuid).create(virtual_size, vdi_type=vdi_type,
                                              sharable=sharable, read_only=read_only)
        await report(progress, 1.0)
        return info

    async def vdi_info(self, sr_uuid: str, location: str) -> VdiInfo:
        return self._sr(sr_uuid).info(location)

    async def vdi_destroy(self, sr_uuid: str, location: str, *,
                          progress: Progress = None) -> None:
        sr = self._sr(sr_uuid)
        sr.file(location)
        if self._users_of(sr_uuid, location):
            raise VDIInUse(location, "destroy")
        sr.destroy(location)
        await report(progress, 1.0)

    async def _duplicate(self, sr_uuid: str, location: str, progress: Progress) -> VdiInfo:
        """Clone/snapshot: the disk's content moves into a hidden read-only base, and both the
        disk and the new one become empty qcow2 overlays on it.  A disk in use by a running VM
        switches to its new overlay live (blockdev-add + blockdev-snapshot)."""
        sr = self._sr(sr_uuid)
        sr.check_writable()
        src = sr.file(location)
        meta = sr.meta().get(location, {})
        if meta.get("type") == "suspend" or sr.format_of(location) != "qcow2":
            return await self.vdi_copy(sr_uuid, location, sr_uuid, progress=progress)
        size = sr.info(location)["virtual_size"]
        writers = [(m, d) for m, d in self._users_of(sr_uuid, location) if d["mode"] == "RW"]
        base_name = sr.new_location(hidden=True)
        new_loc = sr.new_location()
        base, new = sr.path / base_name, sr.path / new_loc
        os.rename(src, base)
        switched = False
        try:
            await sr.overlay(src, base_name, size)
            if writers:
                # QEMU keeps writing the renamed file until it moves onto the new overlay
                m, d = writers[0]
                node = f"{d['node'].split('-')[0]}-{_uuid.uuid4().hex[:8]}"
                await m.execute("blockdev-add", {
                    "driver": "qcow2", "node-name": node, "backing": None,
                    "file": {"driver": "file", "filename": str(src)}})
                try:
                    await m.execute("blockdev-snapshot", {"node": d["node"], "overlay": node})
                except BaseException:
                    await m.execute("blockdev-del", {"node-name": node})
                    raise
                switched = True
                d["node"] = node
                m.save()
            await sr.overlay(new, base_name, size)
        except BaseException:
            new.unlink(missing_ok=True)
            if not switched:
                src.unlink(missing_ok=True)
                os.rename(base, src)
            raise
        keep = {k: v for k, v in meta.items() if k in ("type", "sharable")}
        if keep:
            sr.set_meta(new_loc, **keep)
        await report(progress, 1.0)
        return sr.info(new_loc)

    async def vdi_clone(self, sr_uuid: str, location: str, *,
                        progress: Progress = None) -> VdiInfo:
        return await self._duplicate(sr_uuid, location, progress)

    async def vdi_snapshot(self, sr_uuid: str, location: str, *,
                           progress: Progress = None) -> VdiInfo:
        return await self._duplicate(sr_uuid, location, progress)

    async def vdi_copy(self, src_sr_uuid: str, location: str, dst_sr_uuid: str, *,
                       dst_location: str | None = None, progress: Progress = None) -> VdiInfo:
        src_sr, dst_sr = self._sr(src_sr_uuid), self._sr(dst_sr_uuid)
        dst_sr.check_writable()
        src = src_sr.file(location)
        src_info = src_sr.info(location)
        fmt = src_sr.format_of(location)
        if dst_location is not None:
            target = dst_sr.info(dst_location)
            if target["virtual_size"] < src_info["virtual_size"]:
                raise BackendError("VDI_TOO_SMALL", dst_location, src_info["virtual_size"])
            if self._users_of(dst_sr_uuid, dst_location):
                raise VDIInUse(dst_location, "copy")
            await dst_sr.copy_into(src, fmt, dst_sr.file(dst_location), create=False,
                                   progress=progress)
            return dst_sr.info(dst_location)
        new_loc = dst_sr.new_location()
        tmp = dst_sr.temp()
        try:
            await dst_sr.copy_into(src, fmt, tmp, create=True, progress=progress)
            os.replace(tmp, dst_sr.path / new_loc)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if src_info["type"] != "user" and src_info["type"] != "suspend":
            dst_sr.set_meta(new_loc, type=src_info["type"])
        await report(progress, 1.0)
        return dst_sr.info(new_loc)

    async def vdi_resize(self, sr_uuid: str, location: str, new_size: int, *,
                         progress: Progress = None) -> VdiInfo:
        sr = self._sr(sr_uuid)
        sr.check_writable()
        info = sr.info(location)
        size = round_up(int(new_size), _storage.SECTOR)
        if size < info["virtual_size"]:
            raise BackendError("VDI_TOO_SMALL", location, info["virtual_size"])
        users = [(m, d) for m, d in self._users_of(sr_uuid, location)]
        if users:
            m, d = users[0]
            await m.execute("block_resize", {"node-name": d["node"], "size": size})
        else:
            await sr.resize(location, size)
        await report(progress, 1.0)
        return sr.info(location)


__all__ = ["QemuBackend"]
