"""Host devices through XenAPI.py: the simulated host's PCI devices (dom0 access), GPUs
(PGPU, GPU_group, VGPU), its USB stick (PUSB, USB_group, VUSB) and VTPMs."""
import pytest

from tests.helpers import NULL, drop_vm, failure, records
from tests.test_vm_lifecycle import new_vm

T4 = "0000:21:00.0"
VGA = "0000:03:00.0"


def pci(x, pci_id):
    [ref] = [r for r, v in x.PCI.get_all_records().items() if v["pci_id"] == pci_id]
    return ref


def pgpu_of(x, pci_ref):
    [ref] = [r for r, v in x.PGPU.get_all_records().items() if v["PCI"] == pci_ref]
    return ref


def passthrough(x):
    [ref] = [r for r, v in x.VGPU_type.get_all_records().items()
             if v["implementation"] == "passthrough"]
    return ref


@pytest.fixture
def vm(xapi):
    vm = new_vm(xapi, "device test VM")
    yield vm
    if vm in xapi.VM.get_all():
        drop_vm(xapi, vm)


# ---- PCI ----------------------------------------------------------------------------------

def test_pci_devices_of_the_host(xapi):
    x = xapi
    host = x.host.get_all()[0]
    pcis = x.PCI.get_all_records()
    assert {v["pci_id"] for v in pcis.values()} >= {VGA, T4, "0000:41:00.0", "0000:41:00.1"}
    assert sorted(x.host.get_PCIs(host)) == sorted(pcis)
    t4 = pcis[pci(x, T4)]
    assert (t4["class_id"], t4["vendor_id"], t4["device_id"], t4["host"]) == \
        ("0302", "10de", "1eb8", host)
    # the two functions of the X710 depend on each other; the NICs' PIFs point at them
    f0, f1 = pci(x, "0000:41:00.0"), pci(x, "0000:41:00.1")
    assert pcis[f0]["dependencies"] == [f1] and pcis[f1]["dependencies"] == [f0]
    eth = {v["device"]: v["PCI"] for v in x.PIF.get_all_records().values() if v["physical"]}
    assert eth["eth0"] == f0 and eth["eth1"] == f1


def test_pci_dom0_access(xapi):
    x = xapi
    t4 = pci(x, T4)
    pgpu = pgpu_of(x, t4)
    assert x.PCI.get_dom0_access_status(t4) == "enabled"
    # hidden from dom0 at the next boot; until then dom0 still has it
    assert x.PCI.disable_dom0_access(t4) == "disable_on_reboot"
    assert x.PCI.get_dom0_access_status(t4) == "disable_on_reboot"
    assert x.PGPU.get_dom0_access(pgpu) == "disable_on_reboot"
    assert x.PGPU.disable_dom0_access(pgpu) == "disable_on_reboot"
    assert x.PGPU.enable_dom0_access(pgpu) == "enabled"
    assert x.PCI.get_dom0_access_status(t4) == "enabled"
    assert x.PGPU.get_dom0_access(pgpu) == "enabled"
    assert x.PCI.enable_dom0_access(t4) == "enabled"
    assert failure(x.PCI.get_dom0_access_status, "OpaqueRef:nope")[0] == "HANDLE_INVALID"


# ---- GPUs ---------------------------------------------------------------------------------

def test_pgpus_and_groups(xapi):
    x = xapi
    pt = passthrough(x)
    vga, t4 = pgpu_of(x, pci(x, VGA)), pgpu_of(x, pci(x, T4))
    v, t = x.PGPU.get_record(vga), x.PGPU.get_record(t4)
    # the BMC's VGA is dom0's console: nothing to pass through
    assert v["is_system_display_device"] is True and v["supported_VGPU_types"] == []
    assert t["is_system_display_device"] is False and t["enabled_VGPU_types"] == [pt]
    assert t["supported_VGPU_max_capacities"] == {pt: "1"}
    g = x.GPU_group.get_record(t["GPU_group"])
    assert g["PGPUs"] == [t4] and g["GPU_types"] == ["10de/1eb8"]
    assert g["enabled_VGPU_types"] == [pt] and "Tesla T4" in g["name_label"]
    assert t["GPU_group"] != v["GPU_group"]
    assert x.PGPU.get_remaining_capacity(t4, pt) == "1"
    assert x.PGPU.get_remaining_capacity(vga, pt) == "0"
    assert x.GPU_group.get_remaining_capacity(t["GPU_group"], pt) == "1"
    assert x.GPU_group.get_remaining_capacity(v["GPU_group"], pt) == "0"


def test_gpu_group_create_and_destroy(xapi, vm):
    x = xapi
    pt = passthrough(x)
    group = x.GPU_group.create("spare GPUs", "none yet", {"k": "v"})
    g = x.GPU_group.get_record(group)
    assert (g["name_label"], g["name_description"], g["other_config"]) == \
        ("spare GPUs", "none yet", {"k": "v"})
    assert g["PGPUs"] == [] and g["GPU_types"] == [] and g["allocation_algorithm"] == "depth_first"
    assert x.GPU_group.get_remaining_capacity(group, pt) == "0"
    # a vGPU may name an empty group (the VM cannot start until it has a GPU); it goes with it
    vgpu = x.VGPU.create(vm, group, "0", {}, pt)
    x.GPU_group.destroy(group)
    assert group not in x.GPU_group.get_all() and vgpu not in x.VGPU.get_all()
    assert x.VM.get_VGPUs(vm) == []
    t4 = pgpu_of(x, pci(x, T4))
    t4_group = x.PGPU.get_GPU_group(t4)
    assert failure(x.GPU_group.destroy, t4_group) == ["GPU_GROUP_CONTAINS_PGPU", t4]
    assert x.GPU_group.get_PGPUs(t4_group) == [t4]


def test_vgpu_create(xapi, vm):
    x = xapi
    pt = passthrough(x)
    group = x.PGPU.get_GPU_group(pgpu_of(x, pci(x, T4)))
    before = records(x, "VGPU")
    assert failure(x.VGPU.create, vm, group, "first", {}, pt) == ["INVALID_DEVICE", "first"]
    assert failure(x.VGPU.create, vm, group, "0", {}, "OpaqueRef:nope")[0] == "HANDLE_INVALID"
    assert records(x, "VGPU") == before
    vgpu = x.VGPU.create(vm, group, "0", {"a": "b"}, pt)
    r = x.VGPU.get_record(vgpu)
    assert (r["VM"], r["GPU_group"], r["device"], r["type"], r["other_config"]) == \
        (vm, group, "0", pt, {"a": "b"})
    assert r["currently_attached"] is False and r["resident_on"] == NULL
    assert x.VM.get_VGPUs(vm) == [vgpu] and vgpu in x.GPU_group.get_VGPUs(group)
    after = records(x, "VGPU")
    assert failure(x.VGPU.create, vm, group, "0", {}, pt) == ["DEVICE_ALREADY_EXISTS", "0"]
    # a passthrough GPU goes with nothing else in the VM
    assert failure(x.VGPU.create, vm, group, "1", {}, pt) == ["VGPU_TYPE_NOT_COMPATIBLE", pt]
    assert records(x, "VGPU") == after
    # not resident anywhere while the VM is halted: the T4 is still free
    assert x.PGPU.get_remaining_capacity(pgpu_of(x, pci(x, T4)), pt) == "1"


def test_a_started_vm_takes_its_gpu(xapi, vm):
    x = xapi
    pt = passthrough(x)
    t4 = pgpu_of(x, pci(x, T4))
    group = x.PGPU.get_GPU_group(t4)
    vgpu = x.VGPU.create(vm, group, "0", {}, pt)
    other = new_vm(x, "second GPU user")
    try:
        x.VGPU.create(other, group, "0", {}, pt)
        x.VM.start(vm, False, False)
        r = x.VGPU.get_record(vgpu)
        assert (r["resident_on"], r["currently_attached"], r["PCI"]) == (t4, True, pci(x, T4))
        assert x.PGPU.get_resident_VGPUs(t4) == [vgpu]
        assert x.PGPU.get_remaining_capacity(t4, pt) == "0"
        assert x.GPU_group.get_remaining_capacity(group, pt) == "0"
        # the only T4 is taken: the second VM cannot start, and nothing changed
        assert failure(x.VM.start, other, False, False) == ["VM_REQUIRES_GPU", other, group]
        assert x.VM.get_power_state(other) == "Halted"
        assert x.VGPU.get_resident_on(x.VM.get_VGPUs(other)[0]) == NULL
        x.VM.hard_shutdown(vm)
        r = x.VGPU.get_record(vgpu)
        assert (r["resident_on"], r["currently_attached"]) == (NULL, False)
        assert x.PGPU.get_remaining_capacity(t4, pt) == "1"
        x.VM.start(other, False, False)
        assert x.PGPU.get_resident_VGPUs(t4) == x.VM.get_VGPUs(other)
    finally:
        drop_vm(x, other)
    # a group without GPUs cannot give one
    x.VGPU.destroy(vgpu)
    empty = x.GPU_group.create("empty", "", {})
    x.VGPU.create(vm, empty, "0", {}, pt)
    assert failure(x.VM.start, vm, False, False) == ["VM_REQUIRES_GPU", vm, empty]
    x.GPU_group.destroy(empty)


# ---- USB ----------------------------------------------------------------------------------

def stick(x):
    [ref] = [r for r, v in x.PUSB.get_all_records().items() if v["product_id"] == "5583"]
    return ref


def test_pusb_and_scan(xapi):
    x = xapi
    host = x.host.get_all()[0]
    p = x.PUSB.get_record(stick(x))
    assert (p["vendor_id"], p["path"], p["host"], p["passthrough_enabled"]) == \
        ("0781", "2-1", host, False)
    assert float(p["speed"]) == 5000.0
    g = x.USB_group.get_record(p["USB_group"])
    assert g["PUSBs"] == [stick(x)] and g["name_label"] == "Group of 0781 5583 USBs"
    before = records(x, "PUSB", "USB_group")
    x.PUSB.scan(host)
    assert records(x, "PUSB", "USB_group") == before
    assert failure(x.PUSB.scan, "OpaqueRef:nope")[0] == "HANDLE_INVALID"


def test_usb_group_create(xapi, vm):
    x = xapi
    group = x.USB_group.create("my sticks", "", {"x": "1"})
    r = x.USB_group.get_record(group)
    assert (r["name_label"], r["other_config"], r["PUSBs"], r["VUSBs"]) == \
        ("my sticks", {"x": "1"}, [], [])
    # a VUSB of a group without a device: the VM cannot start
    vusb = x.VUSB.create(vm, group, {})
    assert failure(x.VM.start, vm, False, False) == ["VM_REQUIRES_VUSB", vm, group]
    assert x.VM.get_power_state(vm) == "Halted"
    x.USB_group.destroy(group)
    assert vusb not in x.VUSB.get_all() and x.VM.get_VUSBs(vm) == []


def test_vusb_create_and_unplug(xapi, vm):
    x = xapi
    pusb = stick(x)
    group = x.PUSB.get_USB_group(pusb)
    vusb = x.VUSB.create(vm, group, {"k": "v"})
    r = x.VUSB.get_record(vusb)
    assert (r["VM"], r["USB_group"], r["other_config"], r["currently_attached"]) == \
        (vm, group, {"k": "v"}, False)
    assert x.VM.get_VUSBs(vm) == [vusb]
    before = records(x, "VUSB")
    # a group holds one device: one VUSB
    assert failure(x.VUSB.create, vm, group, {}) == ["USB_GROUP_CONFLICT", group]
    assert failure(x.VUSB.unplug, vusb) == ["VM_BAD_POWER_STATE", vm, "Running", "Halted"]
    assert records(x, "VUSB") == before
    # started with the stick passed through, the VM has it; unplugged, it has not
    x.PUSB.set_passthrough_enabled(pusb, True)
    try:
        x.VM.start(vm, False, False)
        assert x.VUSB.get_currently_attached(vusb) is True
        assert sorted(x.VUSB.get_allowed_operations(vusb)) == ["attach", "unplug"]
        # the VM has the stick: dom0 cannot take it back, its group cannot go
        assert failure(x.PUSB.set_passthrough_enabled, pusb, False) == \
            ["USB_ALREADY_ATTACHED", pusb, vm]
        assert failure(x.USB_group.destroy, group) == ["USB_GROUP_CONTAINS_VUSB", vusb]
        assert x.PUSB.get_passthrough_enabled(pusb) is True and x.VM.get_VUSBs(vm) == [vusb]
        x.VUSB.unplug(vusb)
        assert x.VUSB.get_currently_attached(vusb) is False
        assert failure(x.VUSB.unplug, vusb) == ["DEVICE_ALREADY_DETACHED", vusb]
        x.VM.hard_shutdown(vm)
    finally:
        x.PUSB.set_passthrough_enabled(pusb, False)
    assert failure(x.USB_group.destroy, group) == ["USB_GROUP_CONTAINS_PUSB", pusb]
    x.VUSB.destroy(vusb)
    assert x.VM.get_VUSBs(vm) == []


def test_vusb_limits(xapi, vm):
    x = xapi
    groups = [x.USB_group.create(f"g{i}", "", {}) for i in range(7)]
    try:
        for g in groups[:6]:
            x.VUSB.create(vm, g, {})
        before = records(x, "VUSB")
        assert failure(x.VUSB.create, vm, groups[6], {}) == ["TOO_MANY_VUSBS", "6"]
        assert records(x, "VUSB") == before
        for v in x.VM.get_VUSBs(vm):
            x.VUSB.destroy(v)
        x.VM.set_ha_restart_priority(vm, "restart")
        err = failure(x.VUSB.create, vm, groups[6], {})
        assert err[0] == "OPERATION_NOT_ALLOWED" and "ha_restart_priority" in err[1]
        assert x.VM.get_VUSBs(vm) == []
        x.VM.set_ha_restart_priority(vm, "")
    finally:
        for g in groups:
            for v in x.USB_group.get_VUSBs(g):
                x.VUSB.destroy(v)
            x.USB_group.destroy(g)


# ---- VTPM ---------------------------------------------------------------------------------

def test_vtpm_create_and_destroy(xapi, vm):
    x = xapi
    vtpm = x.VTPM.create(vm, True)
    r = x.VTPM.get_record(vtpm)
    assert (r["VM"], r["is_unique"], r["persistence_backend"], r["is_protected"]) == \
        (vm, True, "xapi", False)
    assert x.VM.get_VTPMs(vm) == [vtpm]
    assert failure(x.VTPM.create, vm, False) == ["VTPM_MAX_AMOUNT_REACHED", "1"]
    x.VM.start(vm, False, False)
    assert failure(x.VTPM.destroy, vtpm) == ["VM_BAD_POWER_STATE", vm, "Halted", "Running"]
    x.VM.hard_shutdown(vm)
    x.VTPM.destroy(vtpm)
    assert x.VM.get_VTPMs(vm) == []
    x.VM.start(vm, False, False)
    assert failure(x.VTPM.create, vm, True) == ["VM_BAD_POWER_STATE", vm, "Halted", "Running"]
    assert x.VM.get_VTPMs(vm) == []


def test_pci_dom0_access_follows_a_reboot(fresh_server):
    import time
    srv = fresh_server()
    x = srv.session().xenapi
    host = x.host.get_all()[0]
    t4 = pci(x, T4)
    pgpu = pgpu_of(x, t4)
    assert x.PCI.disable_dom0_access(t4) == "disable_on_reboot"
    x.host.disable(host)
    x.host.reboot(host)
    deadline = time.monotonic() + 20
    while not (x.host.get_enabled(host) and x.host_metrics.get_live(x.host.get_metrics(host))):
        assert time.monotonic() < deadline, "the host did not come back"
        time.sleep(0.1)
    # hidden from dom0 since this boot
    assert x.PCI.get_dom0_access_status(t4) == "disabled"
    assert x.PGPU.get_dom0_access(pgpu) == "disabled"
    assert x.PGPU.enable_dom0_access(pgpu) == "enable_on_reboot"
    assert x.PCI.get_dom0_access_status(t4) == "enable_on_reboot"
    assert x.PCI.disable_dom0_access(t4) == "disabled"
    # the agent's restart changes nothing: the boot is the same, the devices are found again
    kept = records(x, "PCI", "PGPU", "GPU_group", "VGPU_type", "PUSB", "USB_group")
    srv.stop()
    x = fresh_server().session().xenapi
    assert x.PCI.get_dom0_access_status(t4) == "disabled"
    assert x.PGPU.get_dom0_access(pgpu) == "disabled"
    assert records(x, "PCI", "PGPU", "GPU_group", "VGPU_type", "PUSB", "USB_group") == kept


def test_devices_follow_clone_and_destroy(xapi, vm):
    x = xapi
    pt = passthrough(x)
    gpus = x.PGPU.get_GPU_group(pgpu_of(x, pci(x, T4)))
    usbs = x.PUSB.get_USB_group(stick(x))
    x.VGPU.create(vm, gpus, "0", {"k": "v"}, pt)
    x.VTPM.create(vm, False)
    x.VUSB.create(vm, usbs, {})
    clone = x.VM.clone(vm, "device clone")
    try:
        [vgpu] = x.VM.get_VGPUs(clone)
        r = x.VGPU.get_record(vgpu)
        assert (r["GPU_group"], r["type"], r["device"], r["other_config"]) == \
            (gpus, pt, "0", {"k": "v"})
        [vtpm] = x.VM.get_VTPMs(clone)
        assert x.VTPM.get_is_unique(vtpm) is False and vtpm not in x.VM.get_VTPMs(vm)
        assert x.VM.get_VUSBs(clone) == []      # the stick is one VM's
    finally:
        x.VM.destroy(clone)
    # a destroyed VM's devices go with it: the stick's group is free again
    assert vgpu not in x.VGPU.get_all() and vtpm not in x.VTPM.get_all()
    other = new_vm(x, "after the clone")
    [vusb] = x.VM.get_VUSBs(vm)
    try:
        assert failure(x.VUSB.create, other, usbs, {}) == ["USB_GROUP_CONFLICT", usbs]
        disks = [x.VBD.get_VDI(b) for b in x.VM.get_VBDs(vm) if x.VBD.get_type(b) == "Disk"]
        x.VM.destroy(vm)
        for vdi in disks:
            x.VDI.destroy(vdi)
        assert vusb not in x.VUSB.get_all() and x.USB_group.get_VUSBs(usbs) == []
        x.VUSB.create(other, usbs, {})
    finally:
        drop_vm(x, other)
