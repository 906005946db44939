"""The QEMU backend against real QEMU processes and a real guest (TCG when KVM does not work).

The guest is a Debian kernel plus a busybox initramfs (tests/guest/build_guest.sh) whose ACPI
power button runs poweroff; it prints GUEST-READY on the serial console.  Boots are few and
shared: one VM goes through the whole life cycle, a clone boots from its disk, one more VM
proves that a new server takes running QEMUs over.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest
import uvloop

from tests import guest as G

pytestmark = pytest.mark.skipif(G.QEMU_MISSING is not None, reason=G.SKIP_REASON)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def loop():
    loop = uvloop.new_event_loop()          # the loop `pyxapi serve` runs on
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    path = tmp_path_factory.mktemp("qemu-state")
    yield path
    G.kill_qemus(path)


def new_backend(loop, state_dir, **kw):
    from pyxapi.backends import make_backend
    b = make_backend("qemu", state_dir, **kw)
    b.events = []
    b.set_event_sink(b.events.append)
    loop.run_until_complete(b.open())
    return b


@pytest.fixture(scope="module")
def backend(loop, state):
    b = new_backend(loop, state)
    yield b
    loop.run_until_complete(b.close())


@pytest.fixture(scope="module")
def sr(loop, backend):
    sr_uuid = str(uuid.uuid4())
    loop.run_until_complete(backend.sr_create(sr_uuid, "file", {}))
    return sr_uuid


def spec(kernel=None, disks=(), nics=(), memory=256 * MiB, **kw):
    s = {"name": "pyxapi-test", "memory": memory, "vcpus": 1, "disks": list(disks),
         "nics": list(nics)}
    if kernel:
        s["kernel"] = dict(kernel)
    s.update(kw)
    return s


def disk(sr, location, device="0", **kw):
    return {"device": device, "sr": sr, "location": location, "mode": "RW", "type": "Disk",
            "bootable": device == "0", **kw}


def raw_bytes(path, n=64) -> bytes:
    """The first bytes of a disk image as the guest sees them."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "disk.raw")
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), raw], check=True)
        with open(raw, "rb") as f:
            return f.read(n)


def timing(name, seconds):
    print(f"\n[qemu timing] {name}: {seconds:.2f} s")


def wait_gone(backend, loop, vm, con=None, timeout=60.0):
    """Wait until the backend no longer lists ``vm`` (reading its console meanwhile)."""
    deadline = time.monotonic() + timeout
    while vm in loop.run_until_complete(backend.domain_list()):
        assert time.monotonic() < deadline, backend.serial_log(vm).read_bytes()[-1500:]
        if con is not None:
            con.drain(0.05)
        loop.run_until_complete(asyncio.sleep(0.05))


# ------------------------------------------------------------------------------------ storage

def test_file_and_iso_storage(loop, backend, sr, tmp_path):
    from pyxapi.backends.base import BackendError, NoSuchVDI
    run = loop.run_until_complete
    sr_dir = backend._sr(sr).path

    v = run(backend.vdi_create(sr, 10 * MiB + 1))
    assert v["virtual_size"] == 10 * MiB + 512 and v["location"].endswith(".qcow2")
    assert (sr_dir / v["location"]).exists()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                      str(sr_dir / v["location"])],
                                     capture_output=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == v["virtual_size"]

    with pytest.raises(BackendError) as e:
        run(backend.vdi_create(sr, 1 << 60))
    assert e.value.code == "SR_FULL" and int(e.value.params[0]) > int(e.value.params[1])

    grown = run(backend.vdi_resize(sr, v["location"], 20 * MiB))
    assert grown["virtual_size"] == 20 * MiB
    with pytest.raises(BackendError) as e:
        run(backend.vdi_resize(sr, v["location"], 5 * MiB))
    assert e.value.description == ["VDI_TOO_SMALL", v["location"], str(20 * MiB)]

    # clone: the content moves to a hidden base both disks now stand on
    c = run(backend.vdi_clone(sr, v["location"]))
    parent = c["sm_config"]["vhd-parent"]
    assert parent.startswith(".base-") and (sr_dir / parent).exists()
    assert run(backend.vdi_info(sr, v["location"]))["sm_config"]["vhd-parent"] == parent
    locations = {x["location"] for x in run(backend.sr_scan(sr))}
    assert {v["location"], c["location"]} <= locations and parent not in locations
    snap = run(backend.vdi_snapshot(sr, c["location"]))
    assert snap["virtual_size"] == 20 * MiB

    # a file dropped into the SR directory is found by the next scan
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(sr_dir / "dropped.qcow2"),
                    "3M"], check=True)
    found = {x["location"]: x for x in run(backend.sr_scan(sr))}
    assert found["dropped.qcow2"]["virtual_size"] == 3 * MiB

    # full copy: no backing file
    sr2 = str(uuid.uuid4())
    run(backend.sr_create(sr2, "file", {"location": str(tmp_path / "sr2")}))
    full = run(backend.vdi_copy(sr, c["location"], sr2))
    assert "vhd-parent" not in full["sm_config"] and full["virtual_size"] == 20 * MiB
    assert (tmp_path / "sr2" / full["location"]).exists()
    small = run(backend.vdi_create(sr2, MiB))
    with pytest.raises(BackendError) as e:
        run(backend.vdi_copy(sr, c["location"], sr2, dst_location=small["location"]))
    assert e.value.code == "VDI_TOO_SMALL"

    # destroying every user of a base deletes it
    for loc in (v["location"], c["location"], snap["location"], "dropped.qcow2"):
        run(backend.vdi_destroy(sr, loc))
    assert not [n for n in os.listdir(sr_dir) if n.endswith(".qcow2")]
    with pytest.raises(NoSuchVDI):
        run(backend.vdi_info(sr, v["location"]))
    with pytest.raises(BackendError) as e:
        run(backend.vdi_destroy(sr, "../escape.qcow2"))
    assert e.value.code == "VDI_MISSING"

    with pytest.raises(BackendError) as e:
        run(backend.sr_destroy(sr2))
    assert e.value.code == "SR_NOT_EMPTY"
    run(backend.vdi_destroy(sr2, full["location"]))
    run(backend.vdi_destroy(sr2, small["location"]))
    run(backend.sr_destroy(sr2))

    with pytest.raises(BackendError) as e:
        run(backend.sr_create(str(uuid.uuid4()), "nfs", {}))
    assert e.value.description == ["SR_UNKNOWN_DRIVER", "nfs"]

    # ISO library: the .iso files of a directory, read only
    iso_dir = tmp_path / "isos"
    iso_dir.mkdir()
    (iso_dir / "tools.iso").write_bytes(b"\0" * 4096)
    (iso_dir / "notes.txt").write_text("not an image")
    iso = str(uuid.uuid4())
    usage = run(backend.sr_create(iso, "iso", {"location": str(iso_dir)}))
    assert usage["content_type"] == "iso"
    isos = run(backend.sr_scan(iso))
    assert [(x["location"], x["virtual_size"], x["read_only"]) for x in isos] == \
        [("tools.iso", 4096, True)]
    with pytest.raises(BackendError) as e:
        run(backend.vdi_create(iso, MiB))
    assert e.value.description == ["SR_OPERATION_NOT_SUPPORTED", iso]
    assert (iso_dir / "tools.iso").exists()
    run(backend.sr_detach(iso))


# ------------------------------------------------------------------------------------ one VM's life

def test_vm_life_cycle(loop, backend, sr, kernel):
    from pyxapi.backends.base import BackendError
    run = loop.run_until_complete
    vm = str(uuid.uuid4())
    root = run(backend.vdi_create(sr, 64 * MiB))
    s = spec(kernel, disks=[disk(sr, root["location"])],
             nics=[{"device": "0", "mac": "52:54:00:aa:bb:01"}])

    t = time.monotonic()
    domid = run(backend.domain_start(vm, s))
    timing("domain_start (QEMU up, QMP ready, running)", time.monotonic() - t)
    assert run(backend.domain_list())[vm] == {"domid": domid, "power_state": "Running"}
    with pytest.raises(BackendError) as e:
        run(backend.domain_start(vm, s))
    assert e.value.description == ["VM_BAD_POWER_STATE", vm, "Halted", "Running"]
    # the disk is in use: not by another VM, and not destroyable
    with pytest.raises(BackendError) as e:
        run(backend.domain_start(str(uuid.uuid4()), s))
    assert e.value.code == "VDI_IN_USE"
    with pytest.raises(BackendError) as e:
        run(backend.vdi_destroy(sr, root["location"]))
    assert e.value.code == "VDI_IN_USE"

    log = backend.serial_log(vm)
    G.wait_for(log)
    timing("start to GUEST-READY", time.monotonic() - t)
    con = G.Console(backend.serial_socket(vm))
    try:
        assert con.run("cat /sys/class/net/eth0/address") == "52:54:00:aa:bb:01"
        con.run("echo pyxapi-disk-content | dd of=/dev/vda conv=fsync 2>/dev/null")

        # a graphical console on a Unix socket that speaks RFB
        where = run(backend.domain_console(vm))
        assert where["protocol"] == "rfb"
        vnc = G.unix_connect(where["path"])
        assert vnc.recv(12) == b"RFB 003.008\n"
        vnc.close()

        m = run(backend.domain_metrics(vm))
        assert m["vcpus_number"] == 1 and m["memory_actual"] == 256 * MiB
        assert m["power_state"] == "Running" and m["domid"] == domid
        assert 0.0 <= m["vcpus_utilisation"]["0"] <= 1.0

        # the balloon: the guest's virtio_balloon driver gives memory back
        run(backend.domain_set_memory(vm, 192 * MiB))
        deadline = time.monotonic() + 30
        while run(backend.domain_metrics(vm))["memory_actual"] != 192 * MiB:
            assert time.monotonic() < deadline, "balloon did not inflate"
            time.sleep(0.2)
        run(backend.domain_set_memory(vm, 256 * MiB))
        with pytest.raises(BackendError) as e:
            run(backend.domain_set_memory(vm, 512 * MiB))
        assert e.value.code == "INVALID_VALUE"

        # pause / unpause
        run(backend.domain_pause(vm))
        assert run(backend.domain_list())[vm]["power_state"] == "Paused"
        with pytest.raises(BackendError) as e:
            run(backend.domain_pause(vm))
        assert e.value.description == ["VM_BAD_POWER_STATE", vm, "Running", "Paused"]
        with pytest.raises(BackendError) as e:
            run(backend.domain_shutdown(vm, clean=True, timeout=5))
        assert e.value.code == "VM_BAD_POWER_STATE"
        run(backend.domain_unpause(vm))
        assert run(backend.domain_list())[vm]["power_state"] == "Running"
        assert con.run("echo alive") == "alive"

        # online resize: the guest sees the new size
        run(backend.vdi_resize(sr, root["location"], 128 * MiB))
        deadline = time.monotonic() + 20
        while con.run("cat /sys/block/vda/size") != str(128 * MiB // 512):
            assert time.monotonic() < deadline, "guest did not see the resize"
            time.sleep(0.5)

        # hot-plug a second disk and take it away again
        extra = run(backend.vdi_create(sr, 8 * MiB))
        assert run(backend.domain_attach_disk(vm, disk(sr, extra["location"], "1"))) == "xvdb"
        deadline = time.monotonic() + 20
        while con.run("cat /sys/block/vdb/size 2>/dev/null") != str(8 * MiB // 512):
            assert time.monotonic() < deadline, "guest did not see the new disk"
            time.sleep(0.5)
        with pytest.raises(BackendError) as e:
            run(backend.domain_attach_disk(vm, disk(sr, extra["location"], "1")))
        assert e.value.description == ["DEVICE_ALREADY_ATTACHED", "1"]
        run(backend.domain_detach_disk(vm, "1"))
        assert con.run("ls /sys/block/ | grep -c vdb || true") == "0"
        run(backend.vdi_destroy(sr, extra["location"]))

        uptime_before = float(con.run("cut -d' ' -f1 /proc/uptime"))
    finally:
        con.close()

    # suspend into a suspend VDI, resume: the same guest goes on (uptime continues, no boot)
    image = run(backend.vdi_create(sr, backend.suspend_image_size(256 * MiB),
                                   vdi_type="suspend"))
    t = time.monotonic()
    run(backend.domain_suspend(vm, sr, image["location"]))
    timing("suspend (256 MiB guest)", time.monotonic() - t)
    assert vm not in run(backend.domain_list())
    info = run(backend.vdi_info(sr, image["location"]))
    assert info["type"] == "suspend" and info["physical_utilisation"] > MiB
    t = time.monotonic()
    new_domid = run(backend.domain_resume(vm, s, sr, image["location"]))
    timing("resume", time.monotonic() - t)
    assert new_domid != domid
    assert run(backend.domain_list())[vm] == {"domid": new_domid, "power_state": "Running"}
    con = G.Console(backend.serial_socket(vm))
    try:
        uptime_after = float(con.run("cut -d' ' -f1 /proc/uptime"))
        assert uptime_after >= uptime_before
        assert con.run("dd if=/dev/vda bs=19 count=1 2>/dev/null") == "pyxapi-disk-content"
    finally:
        con.close()
    assert log.read_bytes().count(G.READY) == 1          # resumed, not booted again
    run(backend.vdi_destroy(sr, image["location"]))

    # clean shutdown: the ACPI power button; the guest powers off
    t = time.monotonic()
    run(backend.domain_shutdown(vm, clean=True, timeout=60))
    timing("clean shutdown (ACPI)", time.monotonic() - t)
    assert vm not in run(backend.domain_list())
    assert b"Power down" in log.read_bytes() or b"poweroff" in log.read_bytes().lower()
    assert backend.events == []                # all of it was asked for: nothing to report
    with pytest.raises(BackendError) as e:
        run(backend.domain_shutdown(vm, clean=True))
    assert e.value.description == ["VM_BAD_POWER_STATE", vm, "Running", "Halted"]

    # what the guest wrote is on the disk file
    assert raw_bytes(backend._sr(sr).path / root["location"]).startswith(b"pyxapi-disk-content")
    backend.root_disk = root["location"]       # for the clone test


def test_clone_boots_on_its_own_disk(loop, backend, sr, kernel):
    run = loop.run_until_complete
    original = getattr(backend, "root_disk", None)
    if original is None:
        pytest.skip("needs the disk written by test_vm_life_cycle")
    t = time.monotonic()
    clone = run(backend.vdi_clone(sr, original))
    timing("vdi_clone (qcow2 overlay)", time.monotonic() - t)
    assert clone["virtual_size"] == 128 * MiB

    vm = str(uuid.uuid4())
    run(backend.domain_start(vm, spec(kernel, disks=[disk(sr, clone["location"])])))
    G.wait_for(backend.serial_log(vm))
    con = G.Console(backend.serial_socket(vm))
    try:
        assert con.run("dd if=/dev/vda bs=19 count=1 2>/dev/null") == "pyxapi-disk-content"
        con.run("echo the-clone-wrote-this | dd of=/dev/vda conv=fsync 2>/dev/null")
        # live snapshot of the running clone: the guest keeps writing to its new overlay
        snap = run(backend.vdi_snapshot(sr, clone["location"]))
        con.run("echo after-the-snapshot!! | dd of=/dev/vda conv=fsync 2>/dev/null")
        # the guest reboots by itself: its QEMU goes and the backend reports it
        con.send("reboot")
        wait_gone(backend, loop, vm, con)
    finally:
        con.close()
    assert backend.events == [{"kind": "stopped", "vm_uuid": vm, "domid": backend.events[0]["domid"],
                               "reason": "reboot"}]
    backend.events.clear()

    sr_dir = backend._sr(sr).path
    assert raw_bytes(sr_dir / original).startswith(b"pyxapi-disk-content")
    assert raw_bytes(sr_dir / clone["location"]).startswith(b"after-the-snapshot!!")
    assert raw_bytes(sr_dir / snap["location"]).startswith(b"the-clone-wrote-this")
    for loc in (clone["location"], snap["location"], original):
        run(backend.vdi_destroy(sr, loc))
    assert not [n for n in os.listdir(sr_dir) if n.endswith(".qcow2")]


def test_cd_drive_and_shutdown_timeout(loop, backend, tmp_path):
    """A guest that ignores the power button (firmware, nothing to boot), with a CD drive."""
    from pyxapi.backends.base import BackendError
    run = loop.run_until_complete
    iso_dir = tmp_path / "isos"
    iso_dir.mkdir()
    (iso_dir / "install.iso").write_bytes(b"\0" * 2 * MiB)
    iso = str(uuid.uuid4())
    run(backend.sr_create(iso, "iso", {"location": str(iso_dir)}))
    vm = str(uuid.uuid4())
    cd = {"device": "3", "sr": iso, "location": "install.iso", "mode": "RO", "type": "CD"}
    run(backend.domain_start(vm, spec(memory=64 * MiB, disks=[cd], boot_order="d",
                                      vcpus_max=2)))
    argv = json.loads((backend.root / vm / "argv.json").read_text())
    assert any(a.startswith("ide-cd,id=cd3,") and "bootindex=1" in a for a in argv)

    # a vCPU plugged in (up to VCPUs_max)
    assert run(backend.domain_metrics(vm))["vcpus_number"] == 1
    run(backend.domain_set_vcpus(vm, 2))
    assert run(backend.domain_metrics(vm))["vcpus_number"] == 2
    with pytest.raises(BackendError) as e:
        run(backend.domain_set_vcpus(vm, 3))
    assert e.value.description == ["INVALID_VALUE", "VCPUs_number", "3"]

    run(backend.domain_eject_cd(vm, "3"))
    with pytest.raises(BackendError) as e:
        run(backend.domain_eject_cd(vm, "3"))
    assert e.value.description == ["VBD_IS_EMPTY", "3"]
    run(backend.domain_insert_cd(vm, "3", iso, "install.iso"))
    with pytest.raises(BackendError) as e:
        run(backend.domain_insert_cd(vm, "3", iso, "install.iso"))
    assert e.value.description == ["VBD_NOT_EMPTY", "3"]
    with pytest.raises(BackendError) as e:
        run(backend.sr_detach(iso))
    assert e.value.code == "VDI_IN_USE"

    with pytest.raises(BackendError) as e:
        run(backend.domain_shutdown(vm, clean=True, timeout=1.5))
    assert e.value.description == ["VM_SHUTDOWN_TIMEOUT", vm, "1.5"]
    assert run(backend.domain_list())[vm]["power_state"] == "Running"
    run(backend.domain_shutdown(vm, clean=False))
    assert vm not in run(backend.domain_list())
    assert backend.events == []
    run(backend.sr_detach(iso))
    with pytest.raises(BackendError) as e:
        run(backend.domain_start(vm, spec(memory=10 ** 15)))
    assert e.value.code == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert vm not in run(backend.domain_list())


def test_nic_on_a_host_bridge(loop, backend):
    """A network whose bridge exists on the host gets a tap in it; others stay user-mode."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("making a bridge needs root and iproute2")
    run = loop.run_until_complete
    bridge = f"pyxt{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)  # left down
    try:
        vm = str(uuid.uuid4())
        domid = run(backend.domain_start(vm, spec(memory=64 * MiB, boot_order="c", nics=[
            {"device": "0", "mac": "52:54:00:aa:bb:02", "bridge": bridge},
            {"device": "1", "mac": "52:54:00:aa:bb:03", "bridge": "xenbr0"}])))
        tap = f"/sys/class/net/pyx{domid}.0"
        assert os.path.basename(os.path.realpath(f"{tap}/master")) == bridge
        assert not os.path.exists(f"/sys/class/net/pyx{domid}.1")     # no such bridge here
        argv = json.loads((backend.root / vm / "argv.json").read_text())
        assert "user,id=net1,restrict=on" in argv
        run(backend.domain_shutdown(vm, clean=False))
        assert not os.path.exists(tap)                   # the tap went with its QEMU
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)




def test_new_backend_takes_running_qemus_over(loop, state, kernel):
    run = loop.run_until_complete
    first = new_backend(loop, state)
    vm, idle, other = (str(uuid.uuid4()) for _ in range(3))
    domid = run(first.domain_start(vm, spec(kernel)))
    idle_domid = run(first.domain_start(idle, spec(memory=64 * MiB), paused=True))
    run(first.domain_start(other, spec(memory=64 * MiB)))
    G.wait_for(first.serial_log(vm))
    run(first.close())                                 # the server goes; QEMUs stay

    second = new_backend(loop, state)
    try:
        listed = run(second.domain_list())
        assert listed[vm] == {"domid": domid, "power_state": "Running"}
        assert listed[idle] == {"domid": idle_domid, "power_state": "Paused"}
        assert listed[other]["power_state"] == "Running"
        con = G.Console(second.serial_socket(vm))
        try:
            assert con.run("echo still-here") == "still-here"
            run(second.domain_pause(vm))
            run(second.domain_unpause(vm))
            assert con.run("echo and-driven") == "and-driven"
            # the guest kernel panics (pvpanic): reported as a crash
            con.send("echo c > /proc/sysrq-trigger")
            wait_gone(second, loop, vm, con)
        finally:
            con.close()
        assert second.events == [{"kind": "stopped", "vm_uuid": vm, "domid": domid,
                                  "reason": "crash"}]
        second.events.clear()

        # a QEMU killed under a running server: reported stopped (halted), gone from the list
        os.kill(int((state / "qemu" / idle / "pid").read_text()), signal.SIGKILL)
        wait_gone(second, loop, idle)
        assert second.events == [{"kind": "stopped", "vm_uuid": idle, "domid": idle_domid,
                                  "reason": "halt"}]
    finally:
        run(second.close())

    # a QEMU that died while no server ran is simply not there any more (Halted)
    os.kill(int((state / "qemu" / other / "pid").read_text()), signal.SIGKILL)
    time.sleep(0.2)
    third = new_backend(loop, state)
    try:
        assert other not in run(third.domain_list())
        assert not (state / "qemu" / other / "machine.json").exists()
        assert third.events == []
    finally:
        run(third.close())


def test_accelerator_choice(loop, kernel, monkeypatch):
    from pyxapi.backends.qemu import QemuBackend, accel
    run = loop.run_until_complete
    assert run(accel.choose("tcg", None)) == "tcg"
    assert run(accel.choose("kvm", None)) == "kvm"
    with pytest.raises(ValueError):
        run(accel.choose("xen", None))
    monkeypatch.setenv("PYXAPI_QEMU_ACCEL", "tcg")
    assert QemuBackend(None).accel_choice == "tcg"
    monkeypatch.setenv("PYXAPI_QEMU_ACCEL", "bogus")
    with pytest.raises(ValueError):
        QemuBackend(None)
    cpuinfo = open("/proc/cpuinfo").read()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or not (" vmx" in cpuinfo or " svm" in cpuinfo):
        assert not accel.kvm_plausible()
        assert run(accel.choose("auto", None)) == "tcg"
    # the probe itself, to the kernel's first words (the broken-KVM hosts never get there)
    took = run(accel.probe_boot("tcg", kernel["kernel"], kernel["ramdisk"],
                                marker="Linux version", timeout=60))
    assert took is not None
    timing("probe boot (TCG) to the kernel's banner", took)
    assert run(accel.probe_boot("tcg", kernel["kernel"], kernel["ramdisk"],
                                marker="never-printed", timeout=1)) is None
