"""A real guest driven through XenAPI.py: `pyxapi serve --backend qemu`.

The VM boots the test guest's kernel and initramfs directly (PV_kernel / PV_ramdisk / PV_args),
with a qcow2 disk on "Local storage" and a NIC with its VIF's MAC.
"""
from __future__ import annotations

import pathlib
import signal
import time

import pytest

from tests import guest as G
from tests.server import RunningServer

pytestmark = pytest.mark.skipif(G.QEMU_MISSING is not None, reason=G.SKIP_REASON)

MAC = "52:54:00:5e:00:42"


def make_vm(x, kernel):
    vm, vdi = G.make_vm(x, "qemu guest", kernel)
    net = x.network.get_all()[0]
    x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": MAC, "MTU": "1500",
                  "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    return vm, vdi


def wait_state(x, vm, state, con, timeout=60.0):
    deadline = time.monotonic() + timeout
    while x.VM.get_power_state(vm) != state:
        assert time.monotonic() < deadline, f"VM not {state}: {x.VM.get_power_state(vm)}"
        con.drain(0.1)


def test_real_guest_through_the_api(fresh_server, cleanup, kernel):
    srv = fresh_server(backend="qemu")
    x = srv.session().xenapi
    vm, vdi = make_vm(x, kernel)
    uuid = x.VM.get_uuid(vm)
    vm_dir = srv.state_dir / "qemu" / uuid

    t = time.monotonic()
    x.VM.start(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and int(rec["domid"]) > 0
    domid = rec["domid"]
    G.wait_for(vm_dir / "serial.log")
    print(f"\n[qemu timing] VM.start to GUEST-READY through the API: {time.monotonic() - t:.2f} s")
    (console,) = x.VM.get_consoles(vm)  # the VM's VNC screen, a real socket
    location = x.console.get_location(console)
    assert x.console.get_protocol(console) == "rfb" and location.startswith("unix://")
    assert pathlib.Path(location.removeprefix("unix://")).is_socket()

    con = G.Console(vm_dir / "serial.sock")
    try:
        assert con.run("cat /sys/class/net/eth0/address") == MAC
        con.run("echo written-through-the-api | dd of=/dev/vda conv=fsync 2>/dev/null")

        x.VM.pause(vm)
        assert x.VM.get_power_state(vm) == "Paused"
        x.VM.unpause(vm)
        assert x.VM.get_power_state(vm) == "Running"
        before = float(con.run("cut -d' ' -f1 /proc/uptime"))
    finally:
        con.close()

    t = time.monotonic()
    x.VM.suspend(vm)
    suspended = x.VM.get_record(vm)
    assert suspended["power_state"] == "Suspended" and suspended["suspend_VDI"] != "OpaqueRef:NULL"
    x.VM.resume(vm, False, False)
    print(f"[qemu timing] VM.suspend + VM.resume: {time.monotonic() - t:.2f} s")
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_suspend_VDI(vm) == "OpaqueRef:NULL"
    domid = x.VM.get_domid(vm)

    # the server is killed and started again: the VM is still running, same domain
    srv.kill(signal.SIGKILL)
    srv2 = RunningServer(srv.state_dir, backend="qemu")
    try:
        x = srv2.session().xenapi
        assert x.VM.get_power_state(vm) == "Running"
        assert x.VM.get_domid(vm) == domid
        con = G.Console(vm_dir / "serial.sock")
        try:
            assert float(con.run("cut -d' ' -f1 /proc/uptime")) >= before   # not rebooted
        finally:
            con.close()
        assert (vm_dir / "serial.log").read_bytes().count(G.READY) == 1

        t = time.monotonic()
        x.VM.clean_shutdown(vm)
        print(f"[qemu timing] VM.clean_shutdown (ACPI): {time.monotonic() - t:.2f} s")
        assert x.VM.get_power_state(vm) == "Halted"
        assert not (vm_dir / "pid").exists()

        # a clone (copy-on-write disk) boots with the original's data and writes its own
        t = time.monotonic()
        clone = x.VM.clone(vm, "qemu guest clone")
        print(f"[qemu timing] VM.clone: {time.monotonic() - t:.2f} s")
        clone_vdi = x.VBD.get_VDI(x.VM.get_VBDs(clone)[0])
        assert clone_vdi != vdi
        assert x.VDI.get_location(clone_vdi) != x.VDI.get_location(vdi)
        clone_dir = srv.state_dir / "qemu" / x.VM.get_uuid(clone)
        x.VM.start(clone, False, False)
        G.wait_for(clone_dir / "serial.log")
        con = G.Console(clone_dir / "serial.sock")
        try:
            assert con.run("dd if=/dev/vda bs=23 count=1 2>/dev/null") == "written-through-the-api"
            con.run("echo the-clone-wrote-this-now | dd of=/dev/vda conv=fsync 2>/dev/null")
        finally:
            con.close()
        x.VM.hard_shutdown(clone)
        assert x.VM.get_power_state(clone) == "Halted"

        # boot again: what the guest wrote is still on its disk; then it powers off by itself
        x.VM.start(vm, False, False)
        G.wait_for(vm_dir / "serial.log")
        con = G.Console(vm_dir / "serial.sock")
        try:
            assert con.run("dd if=/dev/vda bs=23 count=1 2>/dev/null") == "written-through-the-api"
            con.send("poweroff")
            wait_state(x, vm, "Halted", con)
        finally:
            con.close()
    finally:
        srv2.stop()
