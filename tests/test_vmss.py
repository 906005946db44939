"""VMSS.snapshot_now through XenAPI.py: snapshots of the schedule's type, retention,
last_run_time, and the VMSS alerts (succeeded / failed with a line per VM / lock failed)."""
import time

import pytest

from tests.test_vm_lifecycle import failure, new_vm


def schedule(x, name, kind="snapshot", keep=2):
    return x.VMSS.create({"name_label": name, "name_description": "", "enabled": True,
                          "type": kind, "retained_snapshots": str(keep), "frequency": "daily",
                          "schedule": {"hour": "1", "min": "0"}})


def vmss_snaps(x, vm):
    return [s for s in x.VM.get_snapshots(vm) if x.VM.get_is_vmss_snapshot(s)]


def messages(x, vmss):
    uuid = x.VMSS.get_uuid(vmss)
    return [m for m in x.message.get_all_records().values() if m["obj_uuid"] == uuid]


def test_snapshot_now_snapshots_every_vm_and_keeps_retained_count(xapi):
    x = xapi
    vmss = schedule(x, "nightly", keep=2)
    vms = [new_vm(x, f"vmss-a{i}") for i in range(2)]
    for vm in vms:
        x.VM.set_snapshot_schedule(vm, vmss)
    manual = x.VM.snapshot(vms[0], "by hand")
    assert x.VMSS.get_last_run_time(vmss).value.startswith("1970")

    assert x.VMSS.snapshot_now(vmss) == "SNAPSHOT_SUCCEEDED"
    first = {vm: vmss_snaps(x, vm) for vm in vms}
    assert all(len(s) == 1 for s in first.values())
    snap = first[vms[0]][0]
    assert x.VM.get_is_a_snapshot(snap) and x.VM.get_snapshot_of(snap) == vms[0]
    assert x.VM.get_name_label(snap).startswith("vmss-a0-")
    assert not x.VMSS.get_last_run_time(vmss).value.startswith("1970")

    for _ in range(3):
        x.VMSS.snapshot_now(vmss)
    for vm in vms:
        kept = vmss_snaps(x, vm)
        assert len(kept) == 2  # the oldest went, disks and all
        assert first[vm][0] not in kept
    assert manual in x.VM.get_snapshots(vms[0])  # snapshots not made by the schedule stay
    # the pruned snapshot's disks went with it
    assert all(x.VDI.get_is_a_snapshot(x.VBD.get_VDI(b)) for s in vmss_snaps(x, vms[0])
               for b in x.VM.get_VBDs(s) if x.VBD.get_type(b) == "Disk")
    names = [m["name"] for m in messages(x, vmss)]
    assert names.count("VMSS_SNAPSHOT_SUCCEEDED") == 4


def test_checkpoint_schedule_keeps_the_memory_of_a_running_vm(xapi):
    x = xapi
    vmss = schedule(x, "cp", kind="checkpoint", keep=1)
    vm = new_vm(x, "vmss-cp")
    x.VM.set_snapshot_schedule(vm, vmss)
    x.VM.start(vm, False, False)
    try:
        x.VMSS.snapshot_now(vmss)
        [snap] = vmss_snaps(x, vm)
        assert x.VM.get_snapshot_info(snap)["power-state-at-snapshot"] == "Running"
        assert x.VM.get_power_state(vm) == "Running"
    finally:
        x.VM.hard_shutdown(vm)


def test_failed_vm_is_reported_and_others_go_on(xapi):
    x = xapi
    vmss = schedule(x, "quiesce", kind="snapshot_with_quiesce")
    vm = new_vm(x, "vmss-q")
    x.VM.set_snapshot_schedule(vm, vmss)
    x.VM.start(vm, False, False)  # no guest agent offers quiescing
    try:
        before = x.VM.get_snapshots(vm)
        assert x.VMSS.snapshot_now(vmss) == "SNAPSHOT_FAILED"
        assert x.VM.get_snapshots(vm) == before
        [msg] = [m for m in messages(x, vmss) if m["name"] == "VMSS_SNAPSHOT_FAILED"]
        assert msg["body"] == (f"VM:vmss-qUUID:{x.VM.get_uuid(vm)}Error:"
                               f"['VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED', '{vm}']")
        assert int(msg["priority"]) < 3
        assert not x.VMSS.get_last_run_time(vmss).value.startswith("1970")
    finally:
        x.VM.hard_shutdown(vm)


def test_empty_schedule_and_bad_refs(xapi):
    x = xapi
    vmss = schedule(x, "empty")
    assert x.VMSS.snapshot_now(vmss) == "SNAPSHOT_SUCCEEDED"
    assert failure(x.VMSS.snapshot_now, "OpaqueRef:nope") == ["HANDLE_INVALID", "VMSS",
                                                               "OpaqueRef:nope"]


def test_concurrent_run_raises_lock_failed(server):
    """Two runs of one schedule at once: the second only raises VMSS_SNAPSHOT_LOCK_FAILED."""
    x = server.session("http").xenapi
    vmss = schedule(x, "busy")
    vms = [new_vm(x, f"vmss-busy{i}") for i in range(6)]
    for vm in vms:
        x.VM.set_snapshot_schedule(vm, vmss)
    task = x.Async.VMSS.snapshot_now(vmss)
    second = x.VMSS.snapshot_now(vmss)
    while x.task.get_status(task) == "pending":
        time.sleep(0.05)
    assert x.task.get_status(task) == "success"
    if second == "SNAPSHOT_LOCK_FAILED":  # the first was still running when the second came
        assert any(m["name"] == "VMSS_SNAPSHOT_LOCK_FAILED" for m in messages(x, vmss))
        assert all(len(vmss_snaps(x, vm)) == 1 for vm in vms)
    else:
        pytest.skip("the first run ended before the second call arrived")
