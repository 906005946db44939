"""The simulator backend and the template catalogue."""
from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pyxapi
from pyxapi.backends import make_backend
from pyxapi.backends.base import (
    Backend, BackendError, DomainStateError, DomainTimeout, GiB, InsufficientMemory,
    InsufficientSpace, MiB, NoSuchVDI, VDIInUse, device_name,
)
from pyxapi.backends.simulator import SimulatorBackend, normalise_delays, parse_delays
from pyxapi.errors import ApiError

SR = "5f0c2a4e-0000-4000-8000-000000000001"
SR2 = "5f0c2a4e-0000-4000-8000-000000000002"
LVM = "5f0c2a4e-0000-4000-8000-000000000003"
ISO = "5f0c2a4e-0000-4000-8000-000000000004"
VM1 = "0b7c3a9e-0000-4000-8000-000000000001"
VM2 = "0b7c3a9e-0000-4000-8000-000000000002"


def run(coro):
    return asyncio.run(coro)


def sim(**kw) -> SimulatorBackend:
    kw.setdefault("use_env", False)
    kw.setdefault("delays", {"guest_agent": 0})
    return SimulatorBackend(None, **kw)


def spec(memory=2 * GiB, vcpus=2, **kw):
    s = {"name": "vm", "memory": memory, "vcpus": vcpus, "disks": [], "nics": []}
    s.update(kw)
    return s


# ------------------------------------------------------------------------------ factory / host

def test_make_backend():
    b = make_backend("simulator", None, use_env=False)
    assert isinstance(b, SimulatorBackend) and isinstance(b, Backend)
    with pytest.raises(ValueError):
        make_backend("nope", None)


def test_host_facts():
    b = sim()

    async def go():
        info = await b.host_info()
        assert info["cpu_count"] == len(info["cpus"]) == 32
        assert info["cpu_info"]["modelname"] == "AMD EPYC 7302P 16-Core Processor"
        assert info["memory_total"] == 64 * GiB
        assert info["software_version"]["product_version"] == "8.3.0"
        free = await b.host_free_memory()
        assert free == info["memory_total"] - info["memory_overhead"] - info["dom0_memory"]
        assert 50 * GiB < free < 64 * GiB
        assert "ext" in info["supported_sr_types"] and "iso" in info["supported_sr_types"]
    run(go())


def test_device_name():
    assert [device_name(i) for i in (0, 1, 3, 25, 26)] == \
        ["xvda", "xvdb", "xvdd", "xvdz", "xvdaa"]


# ------------------------------------------------------------------------------ domains

def test_start_shutdown_memory_accounting():
    b = sim()

    async def go():
        free0 = await b.host_free_memory()
        d1 = await b.domain_start(VM1, spec())
        d2 = await b.domain_start(VM2, spec(memory=1 * GiB, vcpus=1))
        assert (d1, d2) == (1, 2)
        over1 = b.memory_overhead(2 * GiB, 2)
        over2 = b.memory_overhead(1 * GiB, 1)
        assert over1 > 0 and over1 % MiB == 0
        assert await b.host_free_memory() == free0 - 2 * GiB - over1 - 1 * GiB - over2
        assert await b.domain_list() == {VM1: {"domid": 1, "power_state": "Running"},
                                         VM2: {"domid": 2, "power_state": "Running"}}
        with pytest.raises(DomainStateError):
            await b.domain_start(VM1, spec())
        await b.domain_shutdown(VM1, clean=True)
        await b.domain_shutdown(VM2, clean=False)
        assert await b.host_free_memory() == free0
        assert await b.domain_list() == {}
        # domids are never reused
        assert await b.domain_start(VM1, spec()) == 3
        await b.domain_destroy(VM1)
        await b.domain_destroy(VM1)                      # idempotent
        assert await b.host_free_memory() == free0
    run(go())


def test_pause_suspend_resume_accounting():
    b = sim()

    async def go():
        await b.sr_create(SR, "ext", {})
        free0 = await b.host_free_memory()
        await b.domain_start(VM1, spec(), paused=True)
        assert (await b.domain_list())[VM1]["power_state"] == "Paused"
        paused_free = await b.host_free_memory()
        assert paused_free < free0                       # a paused domain keeps its memory
        with pytest.raises(DomainStateError):
            await b.domain_shutdown(VM1, clean=True)     # a paused guest cannot shut down cleanly
        await b.domain_unpause(VM1)
        await b.domain_pause(VM1)
        await b.domain_unpause(VM1)
        assert (await b.domain_list())[VM1]["power_state"] == "Running"

        size = b.suspend_image_size(2 * GiB)
        img = await b.vdi_create(SR, size, vdi_type="suspend")
        used_before = (await b.sr_usage(SR))["physical_utilisation"]
        await b.domain_suspend(VM1, SR, img["location"])
        assert await b.domain_list() == {}
        assert await b.host_free_memory() == free0       # memory given back
        used_after = (await b.sr_usage(SR))["physical_utilisation"]
        assert used_after - used_before == 2 * GiB       # the image holds the memory

        domid = await b.domain_resume(VM1, spec(), SR, img["location"])
        assert domid == 2
        assert await b.host_free_memory() == paused_free
        # only a real suspend image can be resumed
        other = await b.vdi_create(SR, size)
        await b.domain_shutdown(VM1, clean=False)
        with pytest.raises(BackendError):
            await b.domain_resume(VM1, spec(), SR, other["location"])
        assert await b.domain_list() == {}
    run(go())


def test_insufficient_memory():
    b = sim(memory_total=16 * GiB)

    async def go():
        free = await b.host_free_memory()
        with pytest.raises(InsufficientMemory) as e:
            await b.domain_start(VM1, spec(memory=free))
        err = e.value
        assert isinstance(err, ApiError)
        assert err.code == "HOST_NOT_ENOUGH_FREE_MEMORY"
        assert err.needed == free + b.memory_overhead(free, 2) and err.free == free
        assert err.params == [str(err.needed), str(free)]
        assert await b.domain_list() == {}
        assert await b.host_free_memory() == free        # nothing reserved
        # ballooning up beyond the free memory fails too
        await b.domain_start(VM1, spec(memory=1 * GiB))
        with pytest.raises(InsufficientMemory):
            await b.domain_set_memory(VM1, 64 * GiB)
        await b.domain_set_memory(VM1, 2 * GiB)
        assert (await b.domain_metrics(VM1))["memory_actual"] == 2 * GiB
    run(go())


def test_reboot_gives_new_domid_and_guest_stop_event():
    b = sim()
    events = []
    b.set_event_sink(events.append)

    async def go():
        await b.domain_start(VM1, spec(os_hint="debian-12",
                                       nics=[{"device": "0", "mac": "aa:00:00:00:00:01"}]))
        assert await b.domain_reboot(VM1) == 2
        assert await b.domain_reboot(VM1, clean=False) == 3
        await asyncio.sleep(0.01)
        free_running = await b.host_free_memory()
        await b.simulate_guest_stop(VM1, "crash")
        assert events[-1] == {"kind": "stopped", "vm_uuid": VM1, "domid": 3, "reason": "crash"}
        assert await b.domain_list() == {}
        assert await b.host_free_memory() > free_running
        assert any(e["kind"] == "guest_metrics" for e in events)
    run(go())


def test_guest_metrics_appear_after_agent_delay():
    b = sim(delays={"guest_agent": 0.05})

    async def go():
        await b.domain_start(VM1, spec(os_hint="Windows 11",
                                       nics=[{"device": "0", "mac": "aa:00:00:00:00:02"}]))
        assert await b.domain_guest_metrics(VM1) is None
        await asyncio.sleep(0.15)
        g = await b.domain_guest_metrics(VM1)
        assert g["os_version"]["distro"] == "windows"
        assert g["networks"]["0/ip"].startswith("10.0.0.")
        assert g["PV_drivers_version"]["major"]
        # a guest with no known OS has no agent
        await b.domain_start(VM2, spec(os_hint="other-install-media"))
        await asyncio.sleep(0.1)
        assert await b.domain_guest_metrics(VM2) is None
        m = await b.domain_metrics(VM1)
        assert set(m["vcpus_utilisation"]) == {"0", "1"} and m["domid"] == 1
        await b.close()
    run(go())


def test_clean_shutdown_timeout_and_hard_shutdown_wins():
    b = sim(delays={"shutdown": 0.3})

    async def go():
        await b.domain_start(VM1, spec())
        with pytest.raises(DomainTimeout) as e:
            await b.domain_shutdown(VM1, clean=True, timeout=0.05)
        assert e.value.code == "VM_SHUTDOWN_TIMEOUT"
        assert (await b.domain_list())[VM1]["power_state"] == "Running"
        clean = asyncio.create_task(b.domain_shutdown(VM1, clean=True))
        await asyncio.sleep(0.05)
        await b.domain_shutdown(VM1, clean=False)
        await clean                                      # finds the domain gone: no error
        assert await b.domain_list() == {}
    run(go())


def test_hotplug_and_cd():
    b = sim()

    async def go():
        await b.sr_create(SR, "ext", {})
        await b.sr_create(ISO, "iso", {"location": "nfs:/isos"})
        isos = await b.sr_scan(ISO)
        assert isos and all(v["read_only"] for v in isos)
        disk = await b.vdi_create(SR, 8 * GiB)
        extra = await b.vdi_create(SR, 1 * GiB)
        await b.domain_start(VM1, spec(disks=[
            {"device": "0", "sr": SR, "location": disk["location"], "mode": "RW",
             "type": "Disk", "bootable": True},
            {"device": "3", "sr": None, "location": None, "mode": "RO", "type": "CD"},
        ]))
        # the same RW disk cannot go to a second domain
        with pytest.raises(VDIInUse):
            await b.domain_start(VM2, spec(disks=[{"device": "0", "sr": SR,
                                                   "location": disk["location"]}]))
        with pytest.raises(VDIInUse):
            await b.vdi_destroy(SR, disk["location"])
        assert await b.domain_attach_disk(VM1, {"device": "1", "sr": SR,
                                                "location": extra["location"]}) == "xvdb"
        with pytest.raises(BackendError) as e:
            await b.domain_attach_disk(VM1, {"device": "1", "sr": SR,
                                             "location": extra["location"]})
        assert e.value.code == "DEVICE_ALREADY_ATTACHED"
        await b.domain_detach_disk(VM1, "1")
        await b.domain_insert_cd(VM1, "3", ISO, isos[0]["location"])
        with pytest.raises(BackendError) as e:
            await b.domain_insert_cd(VM1, "3", ISO, isos[0]["location"])
        assert e.value.code == "VBD_NOT_EMPTY"
        with pytest.raises(BackendError) as e:
            await b.domain_eject_cd(VM1, "0")
        assert e.value.code == "VBD_NOT_REMOVABLE_MEDIA"
        await b.domain_eject_cd(VM1, "3")
        with pytest.raises(BackendError) as e:
            await b.domain_eject_cd(VM1, "3")
        assert e.value.code == "VBD_IS_EMPTY"
        await b.domain_attach_nic(VM1, {"device": "1", "mac": "aa:00:00:00:00:03"})
        await b.domain_detach_nic(VM1, "1")
        assert (await b.domain_console(VM1))["protocol"] == "rfb"
    run(go())


# ------------------------------------------------------------------------------ storage

def test_disk_accounting_thin():
    b = sim()

    async def go():
        info = await b.sr_create(SR, "ext", {})
        assert info["physical_size"] == 500 * GiB and info["physical_utilisation"] == 0
        v = await b.vdi_create(SR, 10 * GiB + 1)
        assert v["virtual_size"] == 10 * GiB + 2 * MiB        # rounded to a VHD block
        assert v["physical_utilisation"] < 1 * MiB             # thin: metadata only
        await b.simulate_guest_write(SR, v["location"], 3 * GiB)
        u1 = (await b.sr_usage(SR))["physical_utilisation"]
        assert 3 * GiB < u1 < 3 * GiB + MiB

        snap = await b.vdi_snapshot(SR, v["location"])
        clone = await b.vdi_clone(SR, snap["location"])
        locs = {x["location"] for x in await b.sr_scan(SR)}
        assert locs == {v["location"], snap["location"], clone["location"]}   # base hidden
        u2 = (await b.sr_usage(SR))["physical_utilisation"]
        assert u1 < u2 < u1 + MiB                              # the data is shared
        assert (await b.sr_usage(SR))["virtual_allocation"] == 3 * v["virtual_size"]

        # the copy is a full, independent disk: utilisation grows by the data
        cp = await b.vdi_copy(SR, snap["location"], SR)
        u3 = (await b.sr_usage(SR))["physical_utilisation"]
        assert 3 * GiB <= u3 - u2 < 3 * GiB + MiB
        assert cp["physical_utilisation"] >= 3 * GiB

        # resize grows the virtual size, not the data; shrinking is refused
        r = await b.vdi_resize(SR, v["location"], 20 * GiB)
        assert r["virtual_size"] == 20 * GiB
        with pytest.raises(BackendError) as e:
            await b.vdi_resize(SR, v["location"], 1 * GiB)
        assert e.value.code == "VDI_TOO_SMALL"

        # destroying everything gives all the space back (hidden parents collected)
        for loc in (v["location"], snap["location"], clone["location"], cp["location"]):
            await b.vdi_destroy(SR, loc)
        assert (await b.sr_usage(SR))["physical_utilisation"] == 0
        assert b._srs[SR].nodes == {}
        with pytest.raises(NoSuchVDI):
            await b.vdi_destroy(SR, v["location"])
    run(go())


def test_snapshot_chain_coalesces():
    b = sim()

    async def go():
        await b.sr_create(SR, "ext", {})
        v = await b.vdi_create(SR, 10 * GiB)
        await b.simulate_guest_write(SR, v["location"], 2 * GiB)
        snap = await b.vdi_snapshot(SR, v["location"])
        await b.simulate_guest_write(SR, v["location"], 1 * GiB)
        await b.vdi_destroy(SR, snap["location"])
        # the base merged back into the disk: one node, holding all the data
        sr = b._srs[SR]
        assert list(sr.nodes) == [v["location"]]
        assert sr.nodes[v["location"]].allocated == 3 * GiB
    run(go())


def test_thick_sr_accounting_and_sr_full():
    b = sim()

    async def go():
        await b.sr_create(LVM, "lvm", {"device": "/dev/sdb"}, physical_size=40 * GiB)
        v = await b.vdi_create(LVM, 10 * GiB)
        assert v["physical_utilisation"] >= 10 * GiB             # thick: all of it
        s = await b.vdi_snapshot(LVM, v["location"])
        assert s["physical_utilisation"] >= 10 * GiB
        before = await b.sr_usage(LVM)
        with pytest.raises(InsufficientSpace) as e:
            await b.vdi_create(LVM, 30 * GiB)
        assert e.value.code == "SR_FULL"
        assert e.value.free == before["physical_size"] - before["physical_utilisation"]
        assert await b.sr_usage(LVM) == before                  # nothing half made
        with pytest.raises(InsufficientSpace):
            await b.vdi_resize(LVM, v["location"], 35 * GiB)
        with pytest.raises(BackendError) as e2:
            await b.sr_destroy(LVM)
        assert e2.value.code == "SR_NOT_EMPTY"
    run(go())


def test_thin_sr_full():
    b = sim()

    async def go():
        await b.sr_create(SR, "ext", {}, physical_size=5 * GiB)
        v = await b.vdi_create(SR, 100 * GiB)                   # thin: overcommit is fine
        await b.simulate_guest_write(SR, v["location"], 4 * GiB)
        with pytest.raises(InsufficientSpace):
            await b.simulate_guest_write(SR, v["location"], 2 * GiB)
        await b.sr_create(SR2, "ext", {}, physical_size=3 * GiB)
        with pytest.raises(InsufficientSpace):
            await b.vdi_copy(SR, v["location"], SR2)
        assert await b.sr_scan(SR2) == []
    run(go())


def test_cancelled_copy_leaves_nothing():
    b = sim(delays={"vdi_copy": 5})
    seen = []

    async def go():
        await b.sr_create(SR, "ext", {})
        await b.sr_create(SR2, "ext", {})
        v = await b.vdi_create(SR, 10 * GiB)
        await b.simulate_guest_write(SR, v["location"], 2 * GiB)
        before = await b.sr_usage(SR2)
        task = asyncio.create_task(b.vdi_copy(SR, v["location"], SR2, progress=seen.append))
        await asyncio.sleep(0.3)
        during = await b.sr_usage(SR2)
        assert during["physical_utilisation"] > before["physical_utilisation"]   # reserved
        assert await b.sr_scan(SR2) == []                                          # invisible
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await b.sr_usage(SR2) == before
        assert await b.sr_scan(SR2) == []
        assert b._srs[SR2].nodes == {}
        assert seen and 0 < seen[-1] < 1 and seen == sorted(seen)
    run(go())


def test_cancelled_start_releases_memory():
    b = sim(delays={"start": 5})

    async def go():
        free0 = await b.host_free_memory()
        task = asyncio.create_task(b.domain_start(VM1, spec()))
        await asyncio.sleep(0.05)
        assert await b.host_free_memory() < free0                 # reserved while building
        assert (await b.domain_list())[VM1]["power_state"] == "Paused"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await b.host_free_memory() == free0
        assert await b.domain_list() == {}
    run(go())


def test_delays_configurable(monkeypatch):
    assert parse_delays("start=2, shutdown=1.5") == {"start": 2.0, "shutdown": 1.5}
    assert normalise_delays({"copy": 3, "clean_shutdown": 1}) == {"vdi_copy": 3.0,
                                                                  "shutdown": 1.0}
    with pytest.raises(ValueError):
        normalise_delays({"strat": 1})
    monkeypatch.setenv("PYXAPI_SIM_DELAY", "start=0.2,vdi_copy=7")
    b = SimulatorBackend(None, delays={"vdi_copy": 0})
    assert b.delays["start"] == 0.2 and b.delays["vdi_copy"] == 0.0
    assert b.delays["shutdown"] == 0.0
    assert SimulatorBackend(None, use_env=False).delays["start"] == 0.0
    assert SimulatorBackend(None, delays="all=1", use_env=False).delays["vdi_resize"] == 1.0

    progress = []

    async def go():
        t0 = time.monotonic()
        await b.domain_start(VM1, spec(), progress=progress.append)
        assert time.monotonic() - t0 >= 0.19
        assert progress[-1] == 1.0 and len(progress) > 1

        async def aprogress(f):                                  # async callbacks work too
            progress.append(-f)
        await b.domain_shutdown(VM1, clean=False, progress=aprogress)
        assert progress[-1] == -1.0
    run(go())


def test_storage_survives_restart(tmp_path):
    async def first():
        b = SimulatorBackend(tmp_path, use_env=False)
        await b.sr_create(SR, "ext", {})
        v = await b.vdi_create(SR, 4 * GiB)
        await b.simulate_guest_write(SR, v["location"], GiB)
        await b.vdi_snapshot(SR, v["location"])
        return await b.sr_scan(SR), await b.sr_usage(SR)

    async def second():
        b = SimulatorBackend(tmp_path, use_env=False)
        with pytest.raises(BackendError):
            await b.sr_scan(SR)                                 # not attached yet
        await b.sr_attach(SR, "ext", {})
        return await b.sr_scan(SR), await b.sr_usage(SR)

    scan1, usage1 = run(first())
    scan2, usage2 = run(second())
    key = lambda v: v["location"]
    assert sorted(scan1, key=key) == sorted(scan2, key=key)
    assert usage1 == usage2


# ------------------------------------------------------------------------------ templates

TEMPLATES = Path(pyxapi.__file__).parent / "model" / "data" / "templates.json"
REQUIRED = {
    "uuid": str, "name_label": str, "name_description": str, "reference_label": str,
    "memory_static_min": int, "memory_static_max": int, "memory_dynamic_min": int,
    "memory_dynamic_max": int, "VCPUs_max": int, "VCPUs_at_startup": int,
    "HVM_boot_policy": str, "HVM_boot_params": dict, "platform": dict,
    "recommendations": str, "other_config": dict, "domain_type": str, "is_a_template": bool,
    "is_default_template": bool, "actions_after_shutdown": str, "actions_after_reboot": str,
    "actions_after_crash": str,
}


def load_templates():
    return json.loads(TEMPLATES.read_text())["templates"]


def test_templates_shape():
    ts = load_templates()
    names = [t["name_label"] for t in ts]
    assert len(names) == len(set(names))
    assert len({t["uuid"] for t in ts}) == len(ts)
    for must in ("Debian Bookworm 12", "Debian Bullseye 11", "Ubuntu Jammy Jellyfish 22.04",
                 "Ubuntu Noble Numbat 24.04", "Rocky Linux 8", "Rocky Linux 9",
                 "CentOS Stream 9", "Red Hat Enterprise Linux 9", "AlmaLinux 9",
                 "Windows 10 (64-bit)", "Windows 11", "Windows Server 2019 (64-bit)",
                 "Windows Server 2022 (64-bit)", "Other install media"):
        assert must in names
    for t in ts:
        for key, typ in REQUIRED.items():
            assert isinstance(t[key], typ), (t["name_label"], key)
        assert t["memory_static_min"] <= t["memory_dynamic_min"] <= t["memory_dynamic_max"] \
            <= t["memory_static_max"]
        assert 1 <= t["VCPUs_at_startup"] <= t["VCPUs_max"]
        assert t["domain_type"] == "hvm" and t["HVM_boot_policy"] == "BIOS order"
        assert set(t["HVM_boot_params"]["order"]) <= set("cdn")
        assert t["HVM_boot_params"].get("firmware", "bios") in ("bios", "uefi")
        for m in (t["platform"], t["HVM_boot_params"], t["other_config"]):
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
        assert t["other_config"]["default_template"] == "true"
        root = ET.fromstring(t["recommendations"])
        assert root.tag == "restrictions"
        fields = {r.get("field"): r.attrib for r in root if r.get("field")}
        assert int(fields["memory-static-max"]["max"]) >= t["memory_static_max"]
        is_windows = t["name_label"].startswith("Windows")
        assert t["platform"]["viridian"] == "true" if is_windows else \
            t["platform"].get("viridian", "false") == "false"
        if t["name_label"] == "Windows 11":
            assert t["HVM_boot_params"]["firmware"] == "uefi"
            assert t["platform"]["vtpm"] == "true"
        if t["other_config"].get("linux_template") == "true":
            assert "nfs" in t["other_config"]["install-methods"]


def test_templates_provision_specs_parse():
    ts = load_templates()
    with_disks = 0
    for t in ts:
        spec_xml = t["other_config"].get("disks")
        if spec_xml is None:
            assert t["name_label"] == "Other install media"
            continue
        with_disks += 1
        root = ET.fromstring(spec_xml)
        assert root.tag == "provision" and not root.attrib
        disks = list(root)
        assert disks
        for d in disks:
            assert d.tag == "disk"
            assert {"device", "size", "sr", "bootable"} <= set(d.attrib)
            assert int(d.get("size")) >= 8 * GiB and int(d.get("size")) % GiB == 0
            assert d.get("bootable") in ("true", "false")
            assert d.get("type", "system") in ("system", "user", "ephemeral", "suspend",
                                                "crashdump")
            int(d.get("device"))
    assert with_disks == len(ts) - 1


def test_template_guest_profiles():
    """Every OS template gives a guest the simulator can describe (Other install media not)."""
    from pyxapi.backends.simulator.guests import profile_for
    for t in load_templates():
        by_label = profile_for(t["reference_label"])
        by_name = profile_for(t["name_label"])
        if t["reference_label"] == "other-install-media":
            assert by_label is None and by_name is None
        else:
            assert by_label is not None and by_label == by_name, t["name_label"]
