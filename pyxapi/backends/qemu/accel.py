"""Choosing the accelerator: KVM only where it really boots a guest, else TCG.

On some hosts /dev/kvm opens but guests never get past the kernel decompressor (nested KVM
without vmx/svm exposed).  So "auto" needs three things for KVM: /dev/kvm usable, vmx or svm in
/proc/cpuinfo, and — when a probe guest is configured — that guest reaching its marker within
``PROBE_TIMEOUT`` seconds.  The choice is cached per host boot in ``<root>/accel.json``.
``PYXAPI_QEMU_ACCEL=kvm|tcg`` (or the backend's ``accel`` option) forces one.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 15.0
ACCELS = ("auto", "kvm", "tcg")


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def kvm_plausible() -> bool:
    """/dev/kvm opens read-write and the CPU shows hardware virtualisation."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in (" vmx", " svm"))


async def probe_boot(accel: str, kernel: str, initrd: str, marker: str = "GUEST-READY",
                     timeout: float = PROBE_TIMEOUT, qemu: str = "qemu-system-x86_64"
                     ) -> float | None:
    """Boot ``kernel``+``initrd`` with ``accel``; seconds until ``marker`` shows on the serial
    console, or None if it did not within ``timeout``.  The probe VM is always killed."""
    work = Path(tempfile.mkdtemp(prefix="pyxapi-probe-"))
    log_path = work / "serial.log"
    argv = [qemu, "-accel", accel, "-m", "256", "-nodefaults", "-display", "none",
            "-no-reboot", "-kernel", kernel, "-initrd", initrd,
            "-append", "console=ttyS0 panic=-1", "-serial", f"file:{log_path}"]
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        while time.monotonic() - start < timeout and proc.returncode is None:
            try:
                if marker.encode() in log_path.read_bytes():
                    return time.monotonic() - start
            except OSError:
                pass
            await asyncio.sleep(0.1)
        return None
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        shutil.rmtree(work, ignore_errors=True)


async def choose(choice: str, cache_dir: Path | None, probe_guest: tuple | None = None) -> str:
    """The accelerator to use for ``choice`` ("auto", "kvm" or "tcg")."""
    choice = (choice or "auto").lower()
    if choice not in ACCELS:
        raise ValueError(f"accel must be one of {', '.join(ACCELS)}, not {choice!r}")
    if choice != "auto":
        return choice
    cache = cache_dir / "accel.json" if cache_dir else None
    if cache is not None:
        try:
            data = json.loads(cache.read_text())
            if data.get("boot_id") == boot_id() and data.get("accel") in ("kvm", "tcg"):
                return data["accel"]
        except (OSError, ValueError):
            pass
    accel = "tcg"
    if kvm_plausible():
        accel = "kvm"
        if probe_guest:
            took = await probe_boot("kvm", *probe_guest)
            accel = "kvm" if took is not None else "tcg"
    log.info("QEMU accelerator: %s", accel)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"boot_id": boot_id(), "accel": accel}))
    return accel
