"""One running QEMU: its command line, its process and its QMP connection.

Each VM has a directory ``<state_dir>/qemu/<vm uuid>/`` holding ``pid`` (written by QEMU),
``qmp.sock``, ``serial.sock`` + ``serial.log`` (the serial console, logged with or without a
client), ``vnc.sock``, ``qemu.log`` (QEMU's own stderr) and ``machine.json`` (what a restarted
server needs to take the VM over again).  QEMU runs with that directory as its working directory
and relative socket names, so the 108-byte limit of Unix socket paths never bites it.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from qemu.qmp import QMPClient
from qemu.qmp.protocol import Runstate

from pyxapi.backends.base import BackendError, MiB, round_up

log = logging.getLogger(__name__)

QEMU = os.environ.get("PYXAPI_QEMU_BINARY", "qemu-system-x86_64")
OVMF = ("/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF_CODE.fd")


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def unix_socket(path: Path) -> socket.socket:
    """A connected Unix socket; paths too long for sockaddr_un go through /proc/self/fd."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(str(path))) < 100:
            s.connect(str(path))
        else:
            fd = os.open(path.parent, os.O_PATH)
            try:
                s.connect(f"/proc/self/fd/{fd}/{path.name}")
            finally:
                os.close(fd)
    except BaseException:
        s.close()
        raise
    return s


def pid_alive(pid: int, vm_uuid: str) -> bool:
    """Is ``pid`` a live (non-zombie) QEMU of this VM?  Guards against reused pids."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return vm_uuid.encode() in f.read()
    except (OSError, IndexError):
        return False


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def boot_indexes(spec: dict) -> dict[str, int]:
    """bootindex per device key ("disk:0", "cd:3", "nic:0") from HVM_boot_params order
    (c: disks, d: CDs, n: network), disks in the order given, bootable ones first."""
    disks = [d for d in spec.get("disks") or [] if d.get("type", "Disk") != "CD"]
    disks.sort(key=lambda d: not d.get("bootable", False))
    cds = [d for d in spec.get("disks") or [] if d.get("type") == "CD"]
    groups = {"c": [f"disk:{d['device']}" for d in disks],
              "d": [f"cd:{d['device']}" for d in cds],
              "n": [f"nic:{n['device']}" for n in spec.get("nics") or []]}
    order = (spec.get("boot_order") or "cdn").lower()
    keys = []
    for letter in order:
        keys += [k for k in groups.get(letter, []) if k not in keys]
    return {k: i + 1 for i, k in enumerate(keys)}


def disk_args(disk: dict, path: Optional[Path], fmt: str, node: str, bootindex: int | None,
              ide_slot: int | None = None) -> list[str]:
    dev = disk["device"]
    ro = "on" if disk.get("mode") == "RO" or disk.get("type") == "CD" else "off"
    args = []
    if path is not None:
        args += ["-blockdev",
                 f"driver={fmt},node-name={node},read-only={ro},"
                 f"file.driver=file,file.filename={path}"]
    boot = f",bootindex={bootindex}" if bootindex else ""
    if disk.get("type") == "CD":
        drive = f",drive={node}" if path is not None else ""
        bus, unit = divmod(ide_slot or 0, 2)
        args += ["-device", f"ide-cd,id=cd{dev},bus=ide.{bus},unit={unit}{drive}{boot}"]
    else:
        args += ["-device", f"virtio-blk-pci,id=disk{dev},drive={node}{boot}"]
    return args


def host_bridge(name: str | None) -> bool:
    """Is ``name`` a Linux bridge on this host that we may plug taps into (root only)?"""
    return bool(name) and os.geteuid() == 0 and os.path.isdir(f"/sys/class/net/{name}/bridge")


def tap_name(domid: int, device: str) -> str:
    return f"pyx{domid}.{device}"[:15]         # IFNAMSIZ - 1


def nic_args(nic: dict, bootindex: int | None, domid: int = 0, pxe: bool = True) -> list[str]:
    """User-mode networking walled off from the host (restrict=on), or a tap QEMU creates
    itself when the network's bridge exists on the host (plugged into it after start)."""
    dev = nic["device"]
    boot = f",bootindex={bootindex}" if bootindex else ""
    mac = f",mac={nic['mac']}" if nic.get("mac") else ""
    if not pxe:
        boot += ",romfile="                   # no network boot asked for: no PXE ROM
    if host_bridge(nic.get("bridge")):
        netdev = f"tap,id=net{dev},ifname={tap_name(domid, dev)},script=no,downscript=no"
    else:
        netdev = f"user,id=net{dev},restrict=on"
    return ["-netdev", netdev,
            "-device", f"virtio-net-pci,id=nic{dev},netdev=net{dev}{mac}{boot}"]


def plug_tap(domid: int, nic: dict) -> None:
    """Put a VM's tap into its bridge and bring it up (QEMU made it, it goes with QEMU)."""
    if host_bridge(nic.get("bridge")):
        tap = tap_name(domid, nic["device"])
        done = subprocess.run(["ip", "link", "set", tap, "master", nic["bridge"], "up"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise BackendError("INTERNAL_ERROR", f"tap {tap}: {done.stderr.strip()}")


def command_line(vm_uuid: str, spec: dict, accel: str, disks: dict, *, domid: int = 0,
                 incoming: str | None = None, log_append: bool = False) -> list[str]:
    """The QEMU argv for a spec.  ``disks``: userdevice → {"path", "format", "node"} for the
    disks with media.  Deterministic, so a resume rebuilds the same machine."""
    memory = round_up(int(spec["memory"]), MiB) // MiB
    static_max = max(memory, round_up(int(spec.get("memory_static_max") or 0), MiB) // MiB)
    vcpus = max(1, int(spec.get("vcpus") or 1))
    vcpus_max = max(vcpus, int(spec.get("vcpus_max") or vcpus))
    name = str(spec.get("name") or vm_uuid).replace(",", ",,")
    argv = [QEMU, "-name", f"{name},debug-threads=on", "-uuid", vm_uuid,
            "-machine", "pc", "-accel", accel,
            "-m", f"{memory}M" if static_max == memory else f"{memory}M,maxmem={static_max}M",
            "-smp", f"{vcpus},maxcpus={vcpus_max}",
            "-nodefaults", "-display", "none", "-vga", "std", "-S",
            "-action", "reboot=shutdown", "-action", "panic=shutdown",
            "-pidfile", "pid",
            "-qmp", "unix:qmp.sock,server=on,wait=off",
            "-chardev", "socket,id=serial0,path=serial.sock,server=on,wait=off,"
                        f"logfile=serial.log,logappend={'on' if log_append else 'off'}",
            "-serial", "chardev:serial0",
            "-vnc", "unix:vnc.sock",
            "-device", "virtio-balloon-pci,id=balloon0",
            "-device", "pvpanic"]                  # a guest kernel panic → GUEST_PANICKED
    if spec.get("firmware") == "uefi":
        ovmf = next((p for p in OVMF if os.path.exists(p)), None)
        if ovmf is None:
            raise BackendError("INTERNAL_ERROR", "UEFI firmware (package ovmf) is not installed")
        argv += ["-bios", ovmf]
    kernel = spec.get("kernel") or {}
    if kernel.get("kernel"):
        argv += ["-kernel", str(kernel["kernel"])]
        if kernel.get("ramdisk"):
            argv += ["-initrd", str(kernel["ramdisk"])]
        if kernel.get("args"):
            argv += ["-append", str(kernel["args"])]
    boot = boot_indexes(spec)
    ide_slot = 0
    for disk in spec.get("disks") or []:
        d = disks.get(disk["device"])
        if disk.get("type") == "CD":
            argv += disk_args(disk, d and d["path"], d["format"] if d else "raw",
                              d["node"] if d else f"cd{disk['device']}-media",
                              boot.get(f"cd:{disk['device']}"), ide_slot)
            ide_slot += 1
        else:
            argv += disk_args(disk, d["path"], d["format"], d["node"],
                              boot.get(f"disk:{disk['device']}"))
    for nic in spec.get("nics") or []:
        argv += nic_args(nic, boot.get(f"nic:{nic['device']}"), domid,
                         pxe="n" in (spec.get("boot_order") or "cdn").lower())
    if incoming:
        argv += ["-incoming", incoming]
    return argv


# --------------------------------------------------------------------------------------------
# A running machine
# --------------------------------------------------------------------------------------------

@dataclass
class Machine:
    vm_uuid: str
    dir: Path
    domid: int
    spec: dict
    accel: str
    disks: dict = field(default_factory=dict)   # userdevice → {"sr", "location", "path", "format", "node", "type", "mode"}
    nics: dict = field(default_factory=dict)    # device → NicSpec
    start_time: _dt.datetime = field(default_factory=now)
    state: str = "building"      # building | running | paused | stopping
    pid: int = 0
    proc: Optional[subprocess.Popen] = None
    qmp: Optional[QMPClient] = None
    fd_channel: Optional[socket.socket] = None
    expected_stop: bool = False  # we asked QEMU to go: no "stopped" event
    shutdown_reason: str = ""    # from the SHUTDOWN event
    panicked: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: Optional[asyncio.Task] = None
    cpu_sample: tuple = ()       # (monotonic time, {vcpu: cpu seconds})

    # ---- files ----------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.dir / name

    def save(self) -> None:
        data = {"domid": self.domid, "spec": self.spec, "accel": self.accel,
                "disks": self.disks, "nics": self.nics,
                "start_time": self.start_time.isoformat()}
        tmp = self.path("machine.json.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path("machine.json"))

    @classmethod
    def load(cls, vm_uuid: str, dir_: Path) -> "Machine":
        data = json.loads((dir_ / "machine.json").read_text())
        return cls(vm_uuid, dir_, int(data["domid"]), data["spec"], data["accel"],
                   disks=data.get("disks", {}), nics=data.get("nics", {}),
                   start_time=_dt.datetime.fromisoformat(data["start_time"]))

    def read_pid(self) -> int:
        try:
            return int(self.path("pid").read_text().strip())
        except (OSError, ValueError):
            return 0

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return bool(self.pid) and pid_alive(self.pid, self.vm_uuid)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.path("qemu.log").read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    # ---- process --------------------------------------------------------------------------
    def spawn(self, argv: list[str], pass_fds=()) -> None:
        """Start QEMU in its own session (so killing the server's process group spares it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("pid", "qmp.sock", "serial.sock", "vnc.sock"):
            self.path(name).unlink(missing_ok=True)
        (self.dir / "argv.json").write_text(json.dumps(argv))
        with open(self.path("qemu.log"), "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, pass_fds=pass_fds)
        self.pid = self.proc.pid

    async def connect(self, timeout: float = 30.0) -> None:
        """Connect QMP (the socket appears a moment after QEMU starts)."""
        deadline = time.monotonic() + timeout
        sock_path = self.path("qmp.sock")
        while True:
            if not self.alive():
                raise BackendError("INTERNAL_ERROR", f"QEMU exited: {self.log_tail()}")
            if sock_path.exists():
                try:
                    sock = unix_socket(sock_path)
                    break
                except (ConnectionRefusedError, FileNotFoundError):
                    pass
            if time.monotonic() > deadline:
                raise BackendError("INTERNAL_ERROR", f"QEMU QMP socket did not appear: "
                                                     f"{self.log_tail()}")
            await asyncio.sleep(0.02)
        # a second handle on the same connection, to pass file descriptors (qemu.qmp's own
        # send_fd_scm reaches into asyncio internals that uvloop does not have)
        self.fd_channel = socket.socket(fileno=os.dup(sock.fileno()))
        qmp = QMPClient(f"vm-{self.vm_uuid[:8]}")
        try:
            # QEMU serves one QMP client at a time: another holder means no greeting
            await asyncio.wait_for(qmp.connect(sock), max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.fd_channel.close()
            self.fd_channel = None
            sock.close()
            raise
        self.qmp = qmp

    def send_fd(self, fd: int) -> None:
        """Pass ``fd`` to QEMU (SCM_RIGHTS with one blank, which QMP's parser ignores);
        name it next with the ``getfd`` command."""
        self.fd_channel.sendmsg([b" "], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                          struct.pack("@i", fd))])

    async def execute(self, cmd: str, args: dict | None = None):
        if self.qmp is None or self.qmp.runstate != Runstate.RUNNING:
            raise BackendError("VM_BAD_POWER_STATE", self.vm_uuid, "Running", "Halted")
        return await self.qmp.execute(cmd, args)

    async def wait_exit(self, timeout: float | None) -> bool:
        """Wait until the watcher saw QEMU go; False on timeout."""
        try:
            await asyncio.wait_for(asyncio.shield(self.exited.wait()), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def kill(self) -> None:
        if self.pid and self.alive():
            try:
                os.killpg(self.pid, signal.SIGKILL)   # QEMU leads its own process group
            except ProcessLookupError:
                pass

    async def reap(self, timeout: float = 10.0) -> None:
        """Wait for the process to be gone (SIGKILL after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                self.kill()
                deadline = time.monotonic() + 5
            await asyncio.sleep(0.02)
        if self.proc is not None:
            self.proc.wait()

    async def disconnect(self) -> None:
        if self.fd_channel is not None:
            self.fd_channel.close()
            self.fd_channel = None
        if self.qmp is not None:
            try:
                await self.qmp.disconnect()
            except Exception:       # EOF from a QEMU that already went: nothing to do
                pass

    # ---- metrics --------------------------------------------------------------------------
    def vcpu_times(self, threads: dict[str, int]) -> dict[str, float]:
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for idx, tid in threads.items():
            try:
                with open(f"/proc/{self.pid}/task/{tid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                out[idx] = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                out[idx] = 0.0
        return out

