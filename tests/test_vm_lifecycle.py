"""Issue 3, VM life cycle: xapi's power-state machine, errors, copies and settings, driven
through XenAPI.py against a real `pyxapi serve` with the simulator backend."""
import time

import pytest
import XenAPI

from tests.helpers import failure

GiB = 1024 ** 3
MiB = 1024 ** 2
TEMPLATE = "Debian Bookworm 12"


def template(x, name=TEMPLATE):
    refs = [r for r in x.VM.get_by_name_label(name) if x.VM.get_is_a_template(r)]
    assert refs, f"no template {name!r}"
    return refs[0]


def new_vm(x, name, tmpl=TEMPLATE, provision=True):
    vm = x.VM.clone(template(x, tmpl), name)
    if provision:
        x.VM.provision(vm)
    return vm


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def free_memory(x):
    """What the host has free, as HOST_NOT_ENOUGH_FREE_MEMORY reports it for a huge VM."""
    huge = x.VM.create(vm_args("huge", 4096 * GiB))
    try:
        err = failure(x.VM.assert_can_boot_here, huge, x.host.get_all()[0])
        assert err[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
        return int(err[2])
    finally:
        x.VM.destroy(huge)


def vm_args(name, memory=GiB, vcpus=1):
    return {
        "name_label": name, "name_description": "", "user_version": "1",
        "is_a_template": False, "affinity": "OpaqueRef:NULL",
        "memory_target": str(memory), "memory_static_max": str(memory),
        "memory_dynamic_max": str(memory), "memory_dynamic_min": str(memory),
        "memory_static_min": str(memory // 2),
        "VCPUs_params": {}, "VCPUs_max": str(vcpus), "VCPUs_at_startup": str(vcpus),
        "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "restart", "PV_bootloader": "", "PV_kernel": "",
        "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "cd"},
        "HVM_shadow_multiplier": 1.0, "platform": {}, "PCI_bus": "", "other_config": {},
        "recommendations": "", "domain_type": "hvm",
    }


# ---- the spec's example session --------------------------------------------------------------

def test_spec_example_session(server):
    session = server.session()
    x = session.xenapi
    vm = new_vm(x, "SMP")
    x.VM.set_name_description(vm, "Debian for Xen")
    host = x.host.get_all()[0]
    before = x.host.get_resident_VMs(host)
    assert vm not in before
    x.VM.start(vm, False, False)
    assert vm in x.host.get_resident_VMs(host)
    assert failure(x.VM.start, vm, False, False) == ["VM_BAD_POWER_STATE", vm, "Halted", "Running"]
    assert x.VM.get_name_label(vm) == "SMP"
    assert x.VM.get_name_description(vm) == "Debian for Xen"
    x.VM.hard_shutdown(vm)
    assert x.host.get_resident_VMs(host) == before
    x.VM.destroy(vm)
    session.xenapi.session.logout()


# ---- the whole journey -----------------------------------------------------------------------

def test_full_lifecycle(xapi):
    x = xapi
    host = x.host.get_all()[0]
    vm = new_vm(x, "journey")
    net = next(n for n, r in x.network.get_all_records().items() if r["bridge"] == "xenbr0")
    vif = x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                        "other_config": {}, "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    data = x.VDI.create({"SR": sr, "virtual_size": str(GiB), "type": "user", "name_label": "data",
                         "sharable": False, "read_only": False, "other_config": {}})
    x.VBD.create({"VM": vm, "VDI": data, "userdevice": "1", "bootable": False, "mode": "RW",
                  "type": "Disk", "empty": False, "other_config": {},
                  "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert x.VM.get_allowed_VBD_devices(vm)[:2] == ["2", "3"]
    rec = x.VM.get_record(vm)
    assert (rec["power_state"], rec["domid"], rec["resident_on"]) == ("Halted", "-1", "OpaqueRef:NULL")
    assert "start" in rec["allowed_operations"] and "pause" not in rec["allowed_operations"]
    assert len(rec["VBDs"]) == 2

    free0 = free_memory(x)
    x.VM.start(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and int(rec["domid"]) > 0
    assert rec["resident_on"] == host and vm in x.host.get_resident_VMs(host)
    assert rec["current_operations"] == {}
    assert "start" not in rec["allowed_operations"] and "hard_shutdown" in rec["allowed_operations"]
    metrics = x.VM_metrics.get_record(rec["metrics"])
    assert int(metrics["memory_actual"]) == int(rec["memory_dynamic_max"])
    assert int(metrics["VCPUs_number"]) == int(rec["VCPUs_at_startup"])
    assert metrics["state"] == ["running"]
    assert int(rec["memory_overhead"]) > 0
    assert free0 - free_memory(x) == int(rec["memory_dynamic_max"]) + int(rec["memory_overhead"])
    assert all(x.VBD.get_currently_attached(b) for b in rec["VBDs"])
    assert x.VIF.get_currently_attached(vif)

    # the guest agent reports a moment later; then clean operations are offered
    gm = wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL"
                  and x.VM.get_guest_metrics(vm))
    g = x.VM_guest_metrics.get_record(gm)
    assert g["os_version"]["distro"] == "debian" and g["PV_drivers_version"]["major"]
    assert g["networks"]["0/ip"].count(".") == 3
    assert {"clean_shutdown", "clean_reboot", "suspend", "checkpoint"} <= set(
        x.VM.get_allowed_operations(vm))

    x.VM.pause(vm)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Paused" and x.VM_metrics.get_state(rec["metrics"]) == ["paused"]
    assert "unpause" in rec["allowed_operations"] and "pause" not in rec["allowed_operations"]
    x.VM.unpause(vm)
    assert x.VM.get_power_state(vm) == "Running"

    domid = x.VM.get_domid(vm)
    x.VM.suspend(vm)
    rec = x.VM.get_record(vm)
    assert (rec["power_state"], rec["domid"], rec["resident_on"]) == ("Suspended", "-1", "OpaqueRef:NULL")
    image = rec["suspend_VDI"]
    assert x.VDI.get_type(image) == "suspend"
    assert free_memory(x) == free0
    assert vm not in x.host.get_resident_VMs(host)
    assert not any(x.VBD.get_currently_attached(b) for b in rec["VBDs"])
    x.VM.resume(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and rec["suspend_VDI"] == "OpaqueRef:NULL"
    assert rec["domid"] != domid and rec["resident_on"] == host
    assert image not in x.VDI.get_all()  # the memory image is gone once resumed

    for reboot in (x.VM.clean_reboot, x.VM.hard_reboot):
        domid = x.VM.get_domid(vm)
        reboot(vm)
        assert x.VM.get_power_state(vm) == "Running" and x.VM.get_domid(vm) != domid

    x.VM.clean_shutdown(vm)
    rec = x.VM.get_record(vm)
    assert (rec["power_state"], rec["domid"], rec["resident_on"]) == ("Halted", "-1", "OpaqueRef:NULL")
    assert x.VM_metrics.get_memory_actual(rec["metrics"]) == "0"
    assert free_memory(x) == free0
    assert vm not in x.host.get_resident_VMs(host)

    disks = [x.VBD.get_VDI(b) for b in rec["VBDs"]]
    x.VM.destroy(vm)
    assert vm not in x.VM.get_all()
    for gone, cls in ((rec["VBDs"], x.VBD), ([vif], x.VIF), ([rec["metrics"]], x.VM_metrics)):
        for ref in gone:
            assert failure(cls.get_uuid, ref)[0] == "HANDLE_INVALID"
    assert data in disks and len(disks) == 2
    assert all(d in x.VDI.get_all() for d in disks)  # disks stay, as xapi
    for d in disks:
        x.VDI.destroy(d)


def test_shutdown_falls_back_and_hard_shutdown_of_suspended(xapi):
    x = xapi
    vm = new_vm(x, "shutdowns")
    x.VM.start(vm, True, False)  # paused: VM.shutdown has to be hard
    assert x.VM.get_power_state(vm) == "Paused"
    x.VM.shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    x.VM.start(vm, False, False)
    x.VM.suspend(vm)
    image = x.VM.get_suspend_VDI(vm)
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted" and x.VM.get_suspend_VDI(vm) == "OpaqueRef:NULL"
    assert image not in x.VDI.get_all()
    x.VM.start(vm, False, False)
    x.VM.hard_shutdown(vm)
    _destroy_with_disks(x, vm)


def _destroy_with_disks(x, vm):
    disks = [x.VBD.get_VDI(b) for b in x.VM.get_VBDs(vm) if x.VBD.get_type(b) == "Disk"]
    x.VM.destroy(vm)
    for d in disks:
        x.VDI.destroy(d)


# ---- every wrong transition ------------------------------------------------------------------

BAD = {
    # state: [(operation, expected states)]
    "Halted": [("pause", "Running"), ("unpause", "Paused"), ("suspend", "Running"),
               ("resume", "Suspended"), ("clean_shutdown", "Running"),
               ("hard_shutdown", "Paused, Suspended, Running"),
               ("shutdown", "Paused, Suspended, Running"), ("clean_reboot", "Running"),
               ("hard_reboot", "Paused, Running"), ("checkpoint", "Paused, Suspended, Running")],
    "Running": [("start", "Halted"), ("unpause", "Paused"), ("resume", "Suspended"),
                ("clone", "Halted"), ("copy", "Halted"), ("destroy", "Halted, Suspended"),
                ("provision", "Halted")],
    "Paused": [("start", "Halted"), ("pause", "Running"), ("suspend", "Running"),
               ("clean_shutdown", "Running"), ("clean_reboot", "Running"),
               ("resume", "Suspended")],
    "Suspended": [("start", "Halted"), ("pause", "Running"), ("unpause", "Paused"),
                  ("suspend", "Running"), ("clean_shutdown", "Running"),
                  ("hard_reboot", "Paused, Running"), ("clone", "Halted")],
}


def _call(x, op, vm):
    args = {"start": (False, False), "resume": (False, False), "clone": ("c",),
            "copy": ("c", "OpaqueRef:NULL"), "checkpoint": ("c",)}.get(op, ())
    return getattr(x.VM, op)(vm, *args)


@pytest.mark.parametrize("state", list(BAD))
def test_bad_transitions(xapi, state):
    x = xapi
    vm = new_vm(x, f"bad-{state}")
    if state != "Halted":
        x.VM.start(vm, state == "Paused", False)
    if state == "Suspended":
        wait_for(lambda: "suspend" in x.VM.get_allowed_operations(vm))
        x.VM.suspend(vm)
    before = x.VM.get_record(vm)
    assert before["power_state"] == state
    for op, expected in BAD[state]:
        assert failure(_call, x, op, vm) == ["VM_BAD_POWER_STATE", vm, expected, state], op
        assert op not in x.VM.get_allowed_operations(vm)
    after = x.VM.get_record(vm)
    assert after == before  # nothing changed, nothing left in current_operations
    if state != "Halted":
        x.VM.hard_shutdown(vm)
    _destroy_with_disks(x, vm)


def test_templates_snapshots_and_blocked_operations(xapi):
    x = xapi
    tmpl = template(x)
    assert failure(x.VM.start, tmpl, False, False) == ["VM_IS_TEMPLATE", tmpl, "start"]
    assert failure(x.VM.destroy, tmpl) == ["VM_IS_TEMPLATE", tmpl, "destroy"]  # a default one
    assert "start" not in x.VM.get_allowed_operations(tmpl)

    vm = new_vm(x, "blocked")
    assert failure(x.VM.provision, vm) == ["PROVISION_ONLY_ALLOWED_ON_TEMPLATE"]
    assert failure(x.VM.revert, vm) == ["REVERT_ONLY_ALLOWED_ON_SNAPSHOT"]
    x.VM.add_to_blocked_operations(vm, "start", "because")
    assert "start" not in x.VM.get_allowed_operations(vm)
    assert failure(x.VM.start, vm, False, False) == ["OPERATION_BLOCKED", vm, "because"]
    assert x.VM.get_power_state(vm) == "Halted"
    x.VM.remove_from_blocked_operations(vm, "start")
    assert "start" in x.VM.get_allowed_operations(vm)

    snap = x.VM.snapshot(vm, "s", [])
    assert failure(x.VM.start, snap, False, False) == ["VM_IS_SNAPSHOT", snap, "start"]
    x.VM.destroy(snap)

    dom0 = next(v for v, r in x.VM.get_all_records().items() if r["is_control_domain"])
    assert failure(x.VM.destroy, dom0)[0] == "VM_BAD_POWER_STATE"
    assert failure(x.VM.suspend, dom0) == ["OPERATION_NOT_ALLOWED",
                                           "This operation is not allowed on a control domain"]
    assert failure(x.VM.power_state_reset, dom0) == ["CANNOT_RESET_CONTROL_DOMAIN", dom0]
    _destroy_with_disks(x, vm)


def test_destroy_refuses_a_running_vm(xapi):
    x = xapi
    vm = new_vm(x, "running-destroy")
    x.VM.start(vm, False, False)
    assert failure(x.VM.destroy, vm) == ["VM_BAD_POWER_STATE", vm, "Halted, Suspended", "Running"]
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)
    _destroy_with_disks(x, vm)


def test_power_state_reset(xapi):
    x = xapi
    vm = new_vm(x, "reset")
    x.VM.start(vm, False, False)
    assert failure(x.VM.power_state_reset, vm) == ["DOMAIN_EXISTS", vm]
    x.VM.pause(vm)
    x.VM.power_state_reset(vm)  # a paused domain is not running: it is forgotten
    rec = x.VM.get_record(vm)
    assert (rec["power_state"], rec["domid"], rec["resident_on"]) == ("Halted", "-1", "OpaqueRef:NULL")
    x.VM.start(vm, False, False)  # and the VM boots again
    x.VM.hard_shutdown(vm)
    _destroy_with_disks(x, vm)


def test_vm_too_big_for_the_host(xapi):
    x = xapi
    vm = x.VM.create(vm_args("too-big", 2048 * GiB))
    host = x.host.get_all()[0]
    free = free_memory(x)
    err = failure(x.VM.start, vm, False, False)
    assert err[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert int(err[1]) > 2048 * GiB and int(err[2]) == free
    assert failure(x.VM.assert_can_boot_here, vm, host) == err
    assert x.VM.get_possible_hosts(vm) == []
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Halted" and rec["current_operations"] == {}
    x.VM.set_memory_limits(vm, str(GiB // 2), str(GiB), str(GiB), str(GiB))
    assert x.VM.get_possible_hosts(vm) == [host]
    x.VM.assert_can_boot_here(vm, host)
    x.VM.destroy(vm)


def test_start_checks_the_vm_settings(xapi):
    x = xapi
    vm = x.VM.create({**vm_args("bad-vcpus"), "VCPUs_max": "1", "VCPUs_at_startup": "2"})
    assert failure(x.VM.start, vm, False, False) == [
        "VALUE_NOT_SUPPORTED", "VCPUs-at-startup", "2", "value greater than VCPUs-max"]
    x.VM.destroy(vm)
    vm = x.VM.create({**vm_args("bad-memory"), "memory_static_min": str(4 * GiB)})
    assert failure(x.VM.start, vm, False, False) == ["MEMORY_CONSTRAINT_VIOLATION"]
    assert x.VM.get_power_state(vm) == "Halted"
    x.VM.destroy(vm)


# ---- memory and VCPUs ------------------------------------------------------------------------

MEMORY_FIELDS = ("memory_static_min", "memory_dynamic_min", "memory_dynamic_max",
                 "memory_static_max", "memory_target", "memory_overhead")


def test_memory_constraint_violations_change_nothing(xapi):
    x = xapi
    vm = x.VM.create(vm_args("memory", GiB))  # 512 MiB <= 1 GiB = 1 GiB = 1 GiB
    rec = x.VM.get_record(vm)
    before = {k: rec[k] for k in MEMORY_FIELDS}
    order = ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]
    for call, args in [
        (x.VM.set_memory_static_max, (str(GiB // 2),)),
        (x.VM.set_memory_static_min, (str(2 * GiB),)),
        (x.VM.set_memory_dynamic_max, (str(2 * GiB),)),
        (x.VM.set_memory_dynamic_min, (str(GiB // 4),)),
        (x.VM.set_memory_dynamic_range, (str(GiB), str(GiB // 2))),
        (x.VM.set_memory_static_range, (str(GiB), str(GiB // 2))),
        (x.VM.set_memory_limits, (str(GiB), str(2 * GiB), str(GiB // 2), str(GiB))),
        (x.VM.set_memory, (str(GiB // 4),)),
    ]:
        assert failure(call, vm, *args) == order, call
        rec = x.VM.get_record(vm)
        assert {k: rec[k] for k in MEMORY_FIELDS} == before
        assert rec["current_operations"] == {}
    x.VM.set_memory_limits(vm, str(256 * MiB), str(4 * GiB), str(GiB), str(2 * GiB))
    rec = x.VM.get_record(vm)
    assert [int(rec[k]) for k in MEMORY_FIELDS[:4]] == [256 * MiB, GiB, 2 * GiB, 4 * GiB]
    assert int(rec["memory_overhead"]) > int(before["memory_overhead"])  # bigger static_max
    x.VM.set_memory(vm, str(3 * GiB))
    rec = x.VM.get_record(vm)
    assert [int(rec[k]) for k in MEMORY_FIELDS[:4]] == [256 * MiB, 3 * GiB, 3 * GiB, 3 * GiB]

    dom0 = next(v for v, r in x.VM.get_all_records().items() if r["is_control_domain"])
    d0 = x.VM.get_memory_static_max(dom0)
    assert failure(x.VM.set_memory_dynamic_range, dom0, str(int(d0) // 2), d0) == [
        "MEMORY_CONSTRAINT_VIOLATION_MAXPIN", "control domain"]
    x.VM.destroy(vm)


def test_memory_settings_need_the_right_power_state(xapi):
    x = xapi
    vm = new_vm(x, "memory-live")
    x.VM.start(vm, False, False)
    assert failure(x.VM.set_memory_static_max, vm, str(4 * GiB)) == [
        "VM_BAD_POWER_STATE", vm, "Halted", "Running"]
    assert failure(x.VM.set_memory_limits, vm, "1", "2", "2", "2")[0] == "VM_BAD_POWER_STATE"
    assert failure(x.VM.set_VCPUs_max, vm, "4") == ["VM_BAD_POWER_STATE", vm, "Halted", "Running"]
    # the dynamic range of a running VM balloons the domain
    x.VM.set_memory_dynamic_range(vm, str(GiB // 2), str(768 * MiB))
    assert x.VM_metrics.get_memory_actual(x.VM.get_metrics(vm)) == str(768 * MiB)
    assert failure(x.VM.set_memory_dynamic_range, vm, str(GiB // 2), str(2 * GiB)) == [
        "MEMORY_CONSTRAINT_VIOLATION_ORDER"]  # above static_max
    assert x.VM.get_memory_dynamic_max(vm) == str(768 * MiB)
    x.VM.hard_shutdown(vm)
    _destroy_with_disks(x, vm)


def test_vcpu_settings(xapi):
    x = xapi
    vm = x.VM.create(vm_args("vcpus", GiB, vcpus=2))
    rule = "VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max"
    assert failure(x.VM.set_VCPUs_at_startup, vm, "3") == ["INVALID_VALUE", rule, "3"]
    assert failure(x.VM.set_VCPUs_at_startup, vm, "0") == ["INVALID_VALUE", rule, "0"]
    assert failure(x.VM.set_VCPUs_max, vm, "1") == ["INVALID_VALUE", rule, "1"]
    assert (x.VM.get_VCPUs_max(vm), x.VM.get_VCPUs_at_startup(vm)) == ("2", "2")
    x.VM.set_VCPUs_max(vm, "4")
    x.VM.set_VCPUs_at_startup(vm, "1")
    assert (x.VM.get_VCPUs_max(vm), x.VM.get_VCPUs_at_startup(vm)) == ("4", "1")
    assert failure(x.VM.set_VCPUs_number_live, vm, "2") == ["VM_BAD_POWER_STATE", vm, "Running",
                                                           "Halted"]
    x.VM.start(vm, False, False)
    # no guest agent yet: an HVM guest cannot hot-plug
    assert failure(x.VM.set_VCPUs_number_live, vm, "2") == ["VM_LACKS_FEATURE", vm]
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)

    vm = new_vm(x, "vcpus-live")
    x.VM.set_VCPUs_max(vm, "4")
    x.VM.start(vm, False, False)
    wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL")
    assert failure(x.VM.set_VCPUs_number_live, vm, "5")[0] == "INVALID_VALUE"
    x.VM.set_VCPUs_number_live(vm, "3")
    assert x.VM_metrics.get_VCPUs_number(x.VM.get_metrics(vm)) == "3"
    assert x.VM.get_VCPUs_at_startup(vm) == "3"
    x.VM.hard_shutdown(vm)
    _destroy_with_disks(x, vm)


def test_boot_policy_domain_type_and_devices(xapi):
    x = xapi
    vm = x.VM.create(vm_args("boot"))
    x.VM.set_HVM_boot_policy(vm, "")
    assert x.VM.get_domain_type(vm) == "pv"
    x.VM.set_domain_type(vm, "hvm")
    assert x.VM.get_HVM_boot_policy(vm) == "BIOS order"
    assert x.VM.get_allowed_VIF_devices(vm) == [str(i) for i in range(7)]
    assert x.VM.get_allowed_VBD_devices(vm)[:3] == ["0", "1", "2"]
    assert x.VM.get_boot_record(vm)["uuid"] == x.VM.get_uuid(vm)
    x.VM.destroy(vm)
    vm = new_vm(x, "devices")
    assert "0" not in x.VM.get_allowed_VBD_devices(vm)
    x.VM.destroy(vm)


# ---- copies ----------------------------------------------------------------------------------

def test_clone_and_copy(xapi):
    x = xapi
    vm = new_vm(x, "original")
    net = x.network.get_all()[0]
    vif = x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                        "other_config": {}, "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
    x.VM.set_memory_limits(vm, str(256 * MiB), str(2 * GiB), str(GiB), str(2 * GiB))
    src = x.VM.get_record(vm)
    disk = x.VBD.get_VDI(src["VBDs"][0])
    for make, args in ((x.VM.clone, ()), (x.VM.copy, ("OpaqueRef:NULL",))):
        new = make(vm, "twin", *args)
        rec = x.VM.get_record(new)
        assert rec["uuid"] != src["uuid"] and rec["name_label"] == "twin"
        assert rec["power_state"] == "Halted" and not rec["is_a_template"]
        for k in MEMORY_FIELDS[:4] + ("VCPUs_max", "platform", "HVM_boot_params", "domain_type"):
            assert rec[k] == src[k], k
        new_disk = x.VBD.get_VDI(rec["VBDs"][0])
        assert new_disk != disk and x.VDI.get_virtual_size(new_disk) == x.VDI.get_virtual_size(disk)
        new_vif = x.VM.get_VIFs(new)[0]
        assert x.VIF.get_MAC(new_vif) != x.VIF.get_MAC(vif)
        assert x.VIF.get_network(new_vif) == net
        assert rec["metrics"] != src["metrics"]
        _destroy_with_disks(x, new)
    x.VM.start(vm, False, False)
    assert failure(x.VM.clone, vm, "no") == ["VM_BAD_POWER_STATE", vm, "Halted", "Running"]
    assert len(x.VM.get_all()) == len(set(x.VM.get_all()))
    x.VM.hard_shutdown(vm)
    iso = next(s for s, r in x.SR.get_all_records().items() if r["content_type"] == "iso")
    n = len(x.VM.get_all())
    assert failure(x.VM.copy, vm, "no", iso) == ["OPERATION_NOT_ALLOWED",
                                                 "Cannot copy a VM's disks to an ISO SR"]
    assert len(x.VM.get_all()) == n
    _destroy_with_disks(x, vm)


def test_snapshot_revert_and_checkpoint(xapi):
    x = xapi
    vm = new_vm(x, "snapped")
    disk = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    x.VM.start(vm, False, False)
    wait_for(lambda: "checkpoint" in x.VM.get_allowed_operations(vm))
    snap = x.VM.snapshot(vm, "before", [])
    s = x.VM.get_record(snap)
    assert s["is_a_snapshot"] and s["is_a_template"] and s["snapshot_of"] == vm
    assert s["power_state"] == "Halted" and s["snapshot_time"].value > "2000"
    assert x.VM.get_snapshots(vm) == [snap] and x.VM.get_parent(vm) == snap
    snap_disk = x.VBD.get_VDI(s["VBDs"][0])
    assert x.VDI.get_is_a_snapshot(snap_disk) and x.VDI.get_snapshot_of(snap_disk) == disk
    assert x.VM.get_power_state(vm) == "Running"  # a snapshot does not stop the VM

    x.VM.set_name_description(vm, "changed after the snapshot")
    x.VM.set_VCPUs_at_startup(vm, "1")
    x.VM.revert(snap)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Halted" and rec["parent"] == snap
    assert rec["name_description"] == s["name_description"] and rec["name_label"] == "snapped"
    new_disk = x.VBD.get_VDI(rec["VBDs"][0])
    assert new_disk != disk and disk not in x.VDI.get_all()  # replaced by a clone
    assert x.VDI.get_snapshot_of(snap_disk) == new_disk
    assert not rec["is_a_template"] and not rec["is_a_snapshot"]

    x.VM.start(vm, False, False)
    wait_for(lambda: "checkpoint" in x.VM.get_allowed_operations(vm))
    cp = x.VM.checkpoint(vm, "with memory")
    c = x.VM.get_record(cp)
    assert c["power_state"] == "Suspended" and c["suspend_VDI"] != "OpaqueRef:NULL"
    assert c["snapshot_info"]["power-state-at-snapshot"] == "Running"
    assert x.VM.get_power_state(vm) == "Running"  # resumed after
    assert set(x.VM.get_snapshots(vm)) == {snap, cp}
    x.VM.revert(cp)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Suspended" and rec["suspend_VDI"] not in (
        "OpaqueRef:NULL", c["suspend_VDI"])
    # from Suspended back to the plain snapshot: shut down hard first, its image goes
    x.VM.revert(snap)
    assert x.VM.get_power_state(vm) == "Halted" and rec["suspend_VDI"] not in x.VDI.get_all()
    assert x.VM.get_suspend_VDI(vm) == "OpaqueRef:NULL"
    x.VM.revert(cp)
    assert x.VM.get_power_state(vm) == "Suspended"
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"

    # a VM cloned from the checkpoint starts its life halted
    twin = x.VM.clone(cp, "from checkpoint")
    assert x.VM.get_power_state(twin) == "Halted" and not x.VM.get_is_a_snapshot(twin)
    _destroy_with_disks(x, twin)
    x.VM.hard_shutdown(vm)
    image = x.VM.get_suspend_VDI(cp)
    for s_ in (snap, cp):
        _destroy_with_disks(x, s_)
    assert image not in x.VDI.get_all()  # a suspended VM's memory image goes with it
    assert x.VM.get_snapshots(vm) == []
    _destroy_with_disks(x, vm)


def test_snapshot_ignoring_a_disk(xapi):
    x = xapi
    vm = new_vm(x, "ignore")
    disk = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    snap = x.VM.snapshot(vm, "without its disk", [disk])
    assert x.VM.get_VBDs(snap) == []
    x.VM.destroy(snap)
    _destroy_with_disks(x, vm)


# ---- provision -------------------------------------------------------------------------------

def test_provision_from_a_template(xapi):
    x = xapi
    pool = x.pool.get_all()[0]
    default_sr = x.pool.get_default_SR(pool)
    vm = x.VM.clone(template(x), "installed")
    assert x.VM.get_is_a_template(vm) and x.VM.get_VBDs(vm) == []
    n_vdis = len(x.VDI.get_all())
    x.VM.provision(vm)
    rec = x.VM.get_record(vm)
    assert not rec["is_a_template"] and "disks" not in rec["other_config"]
    assert rec["other_config"]["base_template_name"] == TEMPLATE
    [vbd] = rec["VBDs"]
    v = x.VBD.get_record(vbd)
    assert (v["userdevice"], v["bootable"], v["type"], v["mode"]) == ("0", True, "Disk", "RW")
    vdi = x.VDI.get_record(v["VDI"])
    assert int(vdi["virtual_size"]) == 10 * GiB and vdi["SR"] == default_sr
    assert vdi["type"] == "system" and len(x.VDI.get_all()) == n_vdis + 1
    assert "start" in rec["allowed_operations"]
    _destroy_with_disks(x, vm)


def test_provision_that_does_not_fit_leaves_nothing(xapi):
    x = xapi
    vm = x.VM.clone(template(x), "too-big-disk")
    sr_uuid = x.SR.get_uuid(x.pool.get_default_SR(x.pool.get_all()[0]))
    x.VM.remove_from_other_config(vm, "disks")
    x.VM.add_to_other_config(vm, "disks", (
        f'<provision><disk device="0" size="{GiB}" sr="{sr_uuid}" bootable="true" type="system"/>'
        f'<disk device="1" size="{1 << 60}" sr="" bootable="false" type="user"/></provision>'))
    n_vdis = len(x.VDI.get_all())
    err = failure(x.VM.provision, vm)
    assert err[0] == "SR_FULL"
    rec = x.VM.get_record(vm)
    assert rec["is_a_template"] and rec["VBDs"] == [] and "disks" in rec["other_config"]
    assert len(x.VDI.get_all()) == n_vdis and rec["current_operations"] == {}
    x.VM.remove_from_other_config(vm, "disks")
    x.VM.add_to_other_config(vm, "disks", "<provision><disk")
    assert failure(x.VM.provision, vm)[0] == "INVALID_VALUE"
    x.VM.destroy(vm)


# ---- operations in progress, task progress, cancellation ------------------------------------

def test_operation_in_progress_progress_and_cancel(fresh_server):
    srv = fresh_server(env={"PYXAPI_SIM_DELAY": "start=2"})
    session = srv.session()
    x = session.xenapi
    vm = new_vm(x, "slow")
    task = x.Async.VM.start(vm, False, False)
    wait_for(lambda: x.VM.get_current_operations(vm))
    assert x.VM.get_current_operations(vm) == {task: "start"}
    assert failure(x.VM.start, vm, False, False) == [
        "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "start", task]
    assert failure(x.VM.destroy, vm) == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "start", task]
    assert x.VM.get_allowed_operations(vm) == []
    progress = wait_for(lambda: 0 < float(x.task.get_progress(task)) < 1
                        and float(x.task.get_progress(task)))
    assert 0 < progress < 1
    wait_for(lambda: x.task.get_status(task) != "pending")
    assert x.task.get_status(task) == "success" and float(x.task.get_progress(task)) == 1.0
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_current_operations(vm) == {}
    x.VM.hard_shutdown(vm)

    # cancelled half-way: the VM is left halted, with nothing in progress
    task = x.Async.VM.start(vm, False, False)
    wait_for(lambda: float(x.task.get_progress(task)) > 0)
    x.task.cancel(task)
    wait_for(lambda: x.task.get_status(task) not in ("pending", "cancelling"))
    assert x.task.get_status(task) == "cancelled"
    rec = x.VM.get_record(vm)
    assert (rec["power_state"], rec["domid"], rec["current_operations"]) == ("Halted", "-1", {})
    assert "start" in rec["allowed_operations"]
    x.VM.start(vm, False, False)  # and nothing stands in the way of the next start
    assert x.VM.get_power_state(vm) == "Running"
    session.xenapi.session.logout()


def test_cancelled_clone_leaves_nothing(fresh_server):
    srv = fresh_server(env={"PYXAPI_SIM_DELAY": "vdi_clone=2"})
    session = srv.session()
    x = session.xenapi
    vm = x.VM.clone(template(x), "src")  # no disks yet: quick
    x.VM.provision(vm)
    vms, vdis, vbds = len(x.VM.get_all()), len(x.VDI.get_all()), len(x.VBD.get_all())
    task = x.Async.VM.clone(vm, "half")
    wait_for(lambda: x.VM.get_current_operations(vm))
    x.task.cancel(task)
    wait_for(lambda: x.task.get_status(task) not in ("pending", "cancelling"))
    assert x.task.get_status(task) == "cancelled"
    assert (len(x.VM.get_all()), len(x.VDI.get_all()), len(x.VBD.get_all())) == (vms, vdis, vbds)
    assert x.VM.get_current_operations(vm) == {}
    session.xenapi.session.logout()


def test_restart_of_the_server_is_a_host_reboot(fresh_server):
    srv = fresh_server()
    x = srv.session().xenapi
    vm = new_vm(x, "survivor")
    x.VM.start(vm, False, False)
    disk = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    srv.stop()
    x = fresh_server().session().xenapi  # same state directory
    rec = x.VM.get_record(vm)
    assert (rec["power_state"], rec["domid"], rec["resident_on"]) == ("Halted", "-1", "OpaqueRef:NULL")
    assert rec["current_operations"] == {} and "start" in rec["allowed_operations"]
    assert x.VBD.get_VDI(rec["VBDs"][0]) == disk
    x.VM.start(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"


def test_plain_setters_and_what_start_checks_of_them(xapi):
    x = xapi
    vm = x.VM.create(vm_args("setters"))
    x.VM.set_order(vm, "3")
    x.VM.set_start_delay(vm, "5")
    x.VM.add_to_NVRAM(vm, "EFI-variables", "AAAA")
    x.VM.set_platform(vm, {"viridian": "true"})
    rec = x.VM.get_record(vm)
    assert (rec["order"], rec["start_delay"], rec["NVRAM"], rec["platform"]) == (
        "3", "5", {"EFI-variables": "AAAA"}, {"viridian": "true"})
    x.VM.set_actions_after_crash(vm, "rename_restart")  # stored as given, refused at start
    assert failure(x.VM.start, vm, False, False)[:3] == [
        "VALUE_NOT_SUPPORTED", "VM.actions_after_crash", "rename_restart"]
    x.VM.set_HVM_shadow_multiplier(vm, 2.0)
    assert failure(x.VM.set_HVM_shadow_multiplier, vm, 0.5) == ["INVALID_VALUE", "multiplier", "0.5"]
    assert x.VM.get_HVM_shadow_multiplier(vm) == 2.0
    x.VM.set_is_a_template(vm, True)
    assert failure(x.VM.start, vm, False, False) == ["VM_IS_TEMPLATE", vm, "start"]
    x.VM.destroy(vm)


def test_suspend_needs_a_suspend_sr(xapi):
    x = xapi
    pool, host = x.pool.get_all()[0], x.host.get_all()[0]
    saved = x.pool.get_suspend_image_SR(pool), x.host.get_suspend_image_sr(host)
    vm = new_vm(x, "no-suspend-sr")
    x.VM.start(vm, False, False)
    try:
        x.pool.set_suspend_image_SR(pool, "OpaqueRef:NULL")
        x.host.set_suspend_image_sr(host, "OpaqueRef:NULL")
        n_vdis = len(x.VDI.get_all())
        assert failure(x.VM.suspend, vm) == ["VM_NO_SUSPEND_SR", vm]
        assert x.VM.get_power_state(vm) == "Running" and len(x.VDI.get_all()) == n_vdis
        x.VM.set_suspend_SR(vm, saved[0])  # the VM's own choice comes first
        x.VM.suspend(vm)
        assert x.VDI.get_SR(x.VM.get_suspend_VDI(vm)) == saved[0]
    finally:
        x.pool.set_suspend_image_SR(pool, saved[0])
        x.host.set_suspend_image_sr(host, saved[1])
    x.VM.hard_shutdown(vm)
    _destroy_with_disks(x, vm)


def test_start_needs_the_sr_of_its_disks(fresh_server):
    x = fresh_server().session().xenapi
    vm = new_vm(x, "needs-sr")
    sr = x.VDI.get_SR(x.VBD.get_VDI(x.VM.get_VBDs(vm)[0]))
    for pbd in x.SR.get_PBDs(sr):
        x.PBD.unplug(pbd)
    assert failure(x.VM.start, vm, False, False) == ["VM_REQUIRES_SR", vm, sr]
    assert failure(x.VM.assert_can_boot_here, vm, x.host.get_all()[0]) == ["VM_REQUIRES_SR", vm, sr]
    assert x.VM.get_possible_hosts(vm) == []
    assert x.VM.get_power_state(vm) == "Halted"
    for pbd in x.SR.get_PBDs(sr):
        x.PBD.plug(pbd)
    x.VM.start(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"


def test_shutdown_gives_the_guest_its_shutdown_delay_then_pulls_the_plug(fresh_server):
    x = fresh_server(env={"PYXAPI_SIM_DELAY": "shutdown=30"}).session().xenapi
    vm = new_vm(x, "stubborn")
    x.VM.start(vm, False, False)
    x.VM.set_shutdown_delay(vm, "1")
    t = time.monotonic()
    x.VM.shutdown(vm)  # the guest takes 30 s to halt: after 1 s it is shut down hard
    assert time.monotonic() - t < 10
    rec = x.VM.get_record(vm)
    assert (rec["power_state"], rec["current_operations"]) == ("Halted", {})


def test_absurd_vcpus_max_is_refused_and_persistence_keeps_working(xapi):
    vm = xapi.VM.create({"name_label": "many-vcpus", "VCPUs_max": "1", "VCPUs_at_startup": "1"})
    try:
        with pytest.raises(XenAPI.Failure) as e:
            xapi.VM.set_VCPUs_max(vm, str(2**62))
        assert e.value.details == ["INVALID_VALUE", "VCPUs_max", str(2**62)]
        assert xapi.VM.get_VCPUs_max(vm) == "1"
        xapi.VM.set_name_label(vm, "still-writable")  # later writes still persist
        assert xapi.VM.get_name_label(vm) == "still-writable"
    finally:
        xapi.VM.destroy(vm)


def test_running_vm_has_an_rfb_console(xapi):
    vm = new_vm(xapi, "console-test", provision=False)
    xapi.VM.set_is_a_template(vm, False)
    try:
        assert xapi.VM.get_consoles(vm) == []
        xapi.VM.start(vm, False, False)
        (console,) = xapi.VM.get_consoles(vm)
        rec = xapi.console.get_record(console)
        assert rec["protocol"] == "rfb" and rec["VM"] == vm
        # a VNC endpoint: a loopback port (simulator) or a Unix socket (QEMU)
        assert rec["location"].startswith(("vnc://127.0.0.1:", "unix://"))
        xapi.VM.hard_shutdown(vm)
        assert xapi.VM.get_consoles(vm) == []
        assert console not in xapi.console.get_all()
    finally:
        xapi.VM.destroy(vm)
