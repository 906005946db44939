"""A real guest's lifecycle through the API: how long a QEMU VM takes to start, suspend,
resume, clone and shut down.

    python -m bench.qemu [--smoke] [--rounds N]

Starts `pyxapi serve --backend qemu` on loopback in a temp state dir and drives the test
guest (tests/guest, built into ~/.cache/pyxapi-guest) with XenAPI.py. Each round, on one VM
with a 64 MiB disk:

- `start_to_ready_s`: VM.start sent → GUEST-READY on the serial log (`start_call_s`: the call
  alone);
- `suspend_s`, `resume_s`: each call; after resume the guest's /proc/uptime must have gone on
  from where it was (`uptime_continued` counts the rounds where it did);
- `clean_shutdown_s`: VM.clean_shutdown (ACPI power button → Halted);
- `clone_s`: VM.clone of the halted VM (copy-on-write disk), and `clone_start_to_ready_s`.

Each figure: median, min, max and every round. The accelerator QEMU got (kvm or tcg) and the
load average at the start are in the JSON: TCG is an order of magnitude slower, and the
machine is shared. The first round also pays for the accelerator choice and a cold cache.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import XenAPI

from bench.common import PASSWORD, PYTHON, ROOT, Proc

READY = b"GUEST-READY"
TIMEOUT = 180.0     # a TCG boot on a loaded machine can take a minute
FIGURES = ("start_call_s", "start_to_ready_s", "suspend_s", "resume_s", "clean_shutdown_s",
           "clone_s", "clone_start_to_ready_s")


def wait_ready(log: pathlib.Path, since: float) -> float:
    """Seconds from ``since`` until GUEST-READY is in the (fresh) serial log."""
    while time.monotonic() - since < TIMEOUT:
        try:
            if READY in log.read_bytes():
                return time.monotonic() - since
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"GUEST-READY not seen in {log} within {TIMEOUT:.0f}s")


def uptime(guest, vm_dir: pathlib.Path) -> float:
    con = guest.Console(vm_dir / "serial.sock")
    try:
        return float(con.run("cut -d' ' -f1 /proc/uptime"))
    finally:
        con.close()


def timed(fn, *args):
    t = time.monotonic()
    result = fn(*args)
    return time.monotonic() - t, result


def one_round(x, guest, qemu_root: pathlib.Path, vm: str) -> tuple[dict, bool, str]:
    """Figures of one round, whether the guest's uptime went on across suspend/resume, and
    the accelerator the running machine got (machine.json only exists while it runs)."""
    r = {}
    vm_dir = qemu_root / x.VM.get_uuid(vm)
    t = time.monotonic()
    x.VM.start(vm, False, False)
    r["start_call_s"] = time.monotonic() - t
    r["start_to_ready_s"] = wait_ready(vm_dir / "serial.log", t)
    accel = json.loads((vm_dir / "machine.json").read_text())["accel"]
    before = uptime(guest, vm_dir)

    r["suspend_s"], _ = timed(x.VM.suspend, vm)
    assert x.VM.get_power_state(vm) == "Suspended"
    r["resume_s"], _ = timed(x.VM.resume, vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    continued = uptime(guest, vm_dir) >= before   # a reboot would start again from ~0

    r["clean_shutdown_s"], _ = timed(x.VM.clean_shutdown, vm)
    assert x.VM.get_power_state(vm) == "Halted"

    r["clone_s"], clone = timed(x.VM.clone, vm, "bench clone")
    clone_dir = qemu_root / x.VM.get_uuid(clone)
    t = time.monotonic()
    x.VM.start(clone, False, False)
    r["clone_start_to_ready_s"] = wait_ready(clone_dir / "serial.log", t)
    x.VM.hard_shutdown(clone)
    vdis = [x.VBD.get_VDI(vbd) for vbd in x.VM.get_VBDs(clone)]
    x.VM.destroy(clone)                  # the clone and its disk go: each round starts alike
    for vdi in vdis:
        x.VDI.destroy(vdi)
    return r, continued, accel


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "rounds": [round(v, 3) for v in values]}


def run(workdir: pathlib.Path, smoke: bool, rounds: int | None = None) -> dict:
    load = os.getloadavg()
    missing = next((t for t in ("qemu-system-x86_64", "qemu-img") if shutil.which(t) is None), None)
    if missing:
        return {"skipped": f"{missing} is not installed", "load_average": list(load)}
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests import guest   # the test guest and its serial console
    kernel = guest.build()
    rounds = rounds or (1 if smoke else 3)
    state = workdir / "qemu-bench"
    state.mkdir(parents=True, exist_ok=True)
    qemu_root = state / "qemu"
    server = Proc([PYTHON, "-m", "pyxapi.cli", "serve", "--http", "127.0.0.1:0",
                   "--state-dir", str(state), "--backend", "qemu", "--log-level", "WARNING"],
                  state / "server.log", env={"PYXAPI_ROOT_PASSWORD": PASSWORD})
    session = XenAPI.Session(f"http://127.0.0.1:{server.port}")
    accels = set()
    try:
        session.login_with_password("root", PASSWORD, "1.0", "bench")
        x = session.xenapi
        vm, _ = guest.make_vm(x, "bench guest", kernel)
        per_round, continued = [], 0
        for _ in range(rounds):
            r, ok, accel = one_round(x, guest, qemu_root, vm)
            per_round.append(r)
            continued += ok
            accels.add(accel)
    finally:
        try:
            session.xenapi.session.logout()
        except Exception:
            pass
        server.stop()
        guest.kill_qemus(state)   # QEMUs outlive the server by design
    out = {"accel": "/".join(sorted(accels)), "load_average": [round(v, 2) for v in load],
           "cpus": os.cpu_count(), "rounds": rounds, "uptime_continued": continued}
    for key in FIGURES:
        out[key] = summary([r[key] for r in per_round])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.qemu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pyxapi-bench-qemu-") as tmp:
        print(json.dumps(run(pathlib.Path(tmp), a.smoke, a.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
