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
