"""The QEMU test guest (built by build_guest.sh from Debian packages) and tools to talk to it."""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

HERE = pathlib.Path(__file__).parent
QEMU_MISSING = next((tool for tool in ("qemu-system-x86_64", "qemu-img")
                     if shutil.which(tool) is None), None)
SKIP_REASON = (f"{QEMU_MISSING} is not installed (apt-get install qemu-system-x86 qemu-utils "
               "cpio, or ./run test which does it)")
READY = b"GUEST-READY"
CMDLINE = "console=ttyS0 quiet"


def build() -> dict:
    """Build (or find in the cache) the guest; {"kernel", "ramdisk", "args"} for a DomainSpec."""
    out = subprocess.run([str(HERE / "build_guest.sh")], check=True, capture_output=True,
                         text=True, timeout=600).stdout.strip().splitlines()[-1]
    cache = pathlib.Path(out)
    return {"kernel": str(cache / "vmlinux"), "ramdisk": str(cache / "initrd.gz"),
            "args": CMDLINE}


def wait_for(path: pathlib.Path, marker: bytes = READY, timeout: float = 120.0,
             count: int = 1) -> float:
    """Seconds until ``marker`` shows ``count`` times in the file at ``path``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if path.read_bytes().count(marker) >= count:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.1)
    tail = path.read_bytes()[-2000:].decode(errors="replace") if path.exists() else "(no log)"
    raise AssertionError(f"{marker!r} not seen in {path} within {timeout}s:\n{tail}")


def unix_connect(path: pathlib.Path) -> socket.socket:
    """Connect to a Unix socket whatever the length of its path."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = os.open(pathlib.Path(path).parent, os.O_PATH)
    try:
        s.connect(f"/proc/self/fd/{fd}/{pathlib.Path(path).name}")
    finally:
        os.close(fd)
    return s


class Console:
    """The guest's serial shell: run a command, get its output."""

    def __init__(self, path: pathlib.Path):
        self.sock = unix_connect(path)
        self.sock.settimeout(0.2)
        self.n = 0

    def run(self, cmd: str, timeout: float = 60.0) -> str:
        self.n += 1
        # the markers are computed by the shell, so the echoed command line never matches them
        begin, end = f"@@B{self.n}@@", f"@@E{self.n}@@"
        line = (f"echo @@B$(({self.n}))@@; {cmd}; echo @@E$(({self.n}))@@\n")
        self.sock.sendall(line.encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while end.encode() not in buf:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to {cmd!r}: {buf[-500:]!r}")
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise AssertionError(f"console closed during {cmd!r}: {buf[-500:]!r}")
            buf += data
        text = buf.decode(errors="replace")
        text = text[text.index(begin) + len(begin):text.index(end)]
        return text.replace("\r", "").strip()

    def send(self, cmd: str) -> None:
        """Type a command whose output nobody waits for (poweroff, reboot, a panic)."""
        self.sock.sendall(cmd.encode() + b"\n")

    def drain(self, seconds: float) -> None:
        """Read and drop output for a while: a client that stops reading stalls the guest's
        serial port, and one that hangs up at once may lose what it just typed."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return
            except socket.timeout:
                pass
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def kill_qemus(state_dir: pathlib.Path) -> None:
    """SIGKILL every QEMU whose pidfile is under ``state_dir`` (QEMUs outlive servers)."""
    for pidfile in pathlib.Path(state_dir).glob("**/qemu/*/pid"):
        try:
            pid = int(pidfile.read_text())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if pidfile.parent.name.encode() not in f.read():
                    continue
            os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


MiB = 1024 * 1024


def vm_record(name: str, kernel: dict, memory: int = 256 * MiB) -> dict:
    """VM.create's record for a VM that boots the test guest's kernel directly."""
    return {
        "name_label": name, "name_description": "", "user_version": "1",
        "is_a_template": False, "affinity": "OpaqueRef:NULL",
        "memory_target": str(memory), "memory_static_max": str(memory),
        "memory_dynamic_max": str(memory), "memory_dynamic_min": str(memory),
        "memory_static_min": str(memory),
        "VCPUs_params": {}, "VCPUs_max": "1", "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "destroy", "PV_bootloader": "", "PV_kernel": kernel["kernel"],
        "PV_ramdisk": kernel["ramdisk"], "PV_args": kernel["args"], "PV_bootloader_args": "",
        "PV_legacy_args": "", "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "c"},
        "HVM_shadow_multiplier": 1.0, "platform": {}, "PCI_bus": "", "other_config": {},
        "recommendations": "", "domain_type": "hvm",
    }


def make_vm(x, name: str, kernel: dict) -> tuple[str, str]:
    """A guest VM with a 64 MiB root disk on the default SR, through XenAPI.py: (vm, vdi)."""
    vm = x.VM.create(vm_record(name, kernel))
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(64 * MiB), "name_label": "root",
                        "name_description": "", "type": "user", "sharable": False,
                        "read_only": False, "other_config": {}, "xenstore_data": {},
                        "sm_config": {}, "tags": []})
    x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                  "type": "Disk", "unpluggable": True, "empty": False, "other_config": {},
                  "qos_algorithm_type": "", "qos_algorithm_params": {}})
    return vm, vdi
