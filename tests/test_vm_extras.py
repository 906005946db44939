"""VM messages beyond the life cycle (pyxapi/api/vm_extras.py): migration to this host, keys and
triggers, plugins, BIOS strings, agility, DR questions, WLB and import, through XenAPI.py
against a real server with the simulator backend."""
import uuid

import pytest

from tests.helpers import NULL, drop_vm, failure, new_network
from tests.test_vm_lifecycle import new_vm, wait_for

GiB = 1024 ** 3


def new_sr(x, sr_type="lvm", size=20 * GiB):
    host = x.host.get_all()[0]
    return x.SR.create(host, {"device": f"/dev/disk/by-id/t-{uuid.uuid4().hex[:8]}"},
                       str(size), "extras " + sr_type, "", sr_type, "user", False, {})


def disks(x, vm):
    out = {}
    for vbd in x.VM.get_VBDs(vm):
        rec = x.VBD.get_record(vbd)
        if rec["type"] == "Disk":
            out[vbd] = rec["VDI"]
    return out


def vm_state(x, vm):
    rec = x.VM.get_record(vm)
    return {k: rec[k] for k in ("power_state", "domid", "resident_on", "current_operations",
                                "bios_strings", "affinity")}, disks(x, vm)


@pytest.fixture
def running(xapi):
    vm = new_vm(xapi, "extras-running")
    xapi.VM.start(vm, False, False)
    # migration needs what the guest agent reports (feature-suspend; else VM_LACKS_FEATURE)
    wait_for(lambda: xapi.VM.get_guest_metrics(vm) != NULL)
    yield vm
    drop_vm(xapi, vm)


@pytest.fixture
def halted(xapi):
    vm = new_vm(xapi, "extras-halted")
    yield vm
    drop_vm(xapi, vm)


def dest(x):
    return {"host": x.host.get_all()[0], "master": "https://127.0.0.1/",
            "xenops": "http://127.0.0.1/services/xenops", "SM": "http://127.0.0.1/services/SM",
            "session_id": "OpaqueRef:x"}


# ---- pool_migrate and restart_device_models: localhost migration ---------------------------

def test_pool_migrate_to_its_host_makes_a_new_domain(xapi, running):
    x, vm = xapi, running
    host = x.host.get_all()[0]
    domid = x.VM.get_domid(vm)
    vdis_before = set(x.VDI.get_all())
    x.VM.pool_migrate(vm, host, {"live": "true"})
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and rec["resident_on"] == host
    assert rec["domid"] != domid and rec["current_operations"] == {}
    assert rec["suspend_VDI"] == NULL
    assert set(x.VDI.get_all()) == vdis_before  # the memory image is gone again
    assert all(x.VBD.get_currently_attached(b) for b in x.VM.get_VBDs(vm))


def test_pool_migrate_needs_a_running_vm(xapi, halted):
    x, vm = xapi, halted
    before = vm_state(x, vm)
    assert failure(x.VM.pool_migrate, vm, x.host.get_all()[0], {}) == [
        "VM_BAD_POWER_STATE", vm, "Running", "Halted"]
    assert vm_state(x, vm) == before
    assert failure(x.VM.pool_migrate, vm, "OpaqueRef:nohost", {}) == [
        "HANDLE_INVALID", "host", "OpaqueRef:nohost"]


def test_restart_device_models(xapi, running, halted):
    x = xapi
    domid = x.VM.get_domid(running)
    x.VM.restart_device_models(running)
    assert x.VM.get_power_state(running) == "Running" and x.VM.get_domid(running) != domid
    assert failure(x.VM.restart_device_models, halted) == [
        "VM_BAD_POWER_STATE", halted, "Running", "Halted"]


def test_pool_migrate_async_shows_the_operation(xapi, running):
    x, vm = xapi, running
    task = x.Async.VM.pool_migrate(vm, x.host.get_all()[0], {})
    wait_for(lambda: x.task.get_status(task) != "pending")
    assert x.task.get_status(task) == "success", x.task.get_error_info(task)
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_current_operations(vm) == {}
    x.task.destroy(task)


# ---- migrate_send / assert_can_migrate: storage migration on this host ----------------------

def test_migrate_send_moves_a_halted_vms_disk(xapi, halted):
    x, vm = xapi, halted
    target = new_sr(x)
    try:
        (vbd, vdi), = disks(x, vm).items()
        name, size = x.VDI.get_name_label(vdi), x.VDI.get_virtual_size(vdi)
        x.VM.assert_can_migrate(vm, dest(x), False, {vdi: target}, {}, {}, {})
        assert x.VM.migrate_send(vm, dest(x), False, {vdi: target}, {}, {}, {}, {}) == vm
        new = x.VBD.get_VDI(vbd)
        assert new != vdi and x.VDI.get_SR(new) == target
        assert x.VDI.get_name_label(new) == name and x.VDI.get_virtual_size(new) == size
        assert vdi not in x.VDI.get_all()
        assert x.VM.get_power_state(vm) == "Halted"
    finally:
        for v in disks(x, vm).values():
            if x.VDI.get_SR(v) == target:
                x.VDI.destroy(v)
        x.PBD.unplug(x.SR.get_PBDs(target)[0])
        x.SR.destroy(target)


def test_migrate_send_moves_a_running_vms_disk_and_vif(xapi, running):
    x, vm = xapi, running
    target = new_sr(x)
    net = new_network(x, "extras-net")
    vif = x.VIF.create({"device": "0", "network": x.network.get_all()[0], "VM": vm, "MAC": "",
                        "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
    try:
        (vbd, vdi), = disks(x, vm).items()
        domid = x.VM.get_domid(vm)
        x.VM.migrate_send(vm, dest(x), True, {vdi: target}, {vif: net}, {}, {}, {})
        assert x.VM.get_power_state(vm) == "Running" and x.VM.get_domid(vm) != domid
        assert x.VDI.get_SR(x.VBD.get_VDI(vbd)) == target
        assert x.VBD.get_currently_attached(vbd)
        assert x.VIF.get_network(vif) == net
    finally:
        x.VM.hard_shutdown(vm)
        x.VIF.destroy(vif)
        x.network.destroy(net)
        for v in disks(x, vm).values():
            x.VDI.destroy(v)
        x.PBD.unplug(x.SR.get_PBDs(target)[0])
        x.SR.destroy(target)


def test_migrate_send_of_a_running_vm_that_fails_keeps_it_running(xapi, running):
    """The disk does not fit on the target SR: the copy fails, the VM comes back on its own
    disk in a new domain, and nothing of the attempt is left."""
    x, vm = xapi, running
    small = new_sr(x, "lvm", 64 * 1024 ** 2)
    try:
        (vbd, vdi), = disks(x, vm).items()
        vdis = set(x.VDI.get_all())
        err = failure(x.VM.migrate_send, vm, dest(x), True, {vdi: small}, {}, {}, {}, {})
        assert err[0] == "SR_FULL"
        rec = x.VM.get_record(vm)
        assert rec["power_state"] == "Running" and rec["current_operations"] == {}
        assert x.VBD.get_VDI(vbd) == vdi and x.VBD.get_currently_attached(vbd)
        assert set(x.VDI.get_all()) == vdis and x.SR.get_VDIs(small) == []
        x.VM.pool_migrate(vm, x.host.get_all()[0], {})  # and it still migrates
    finally:
        x.PBD.unplug(x.SR.get_PBDs(small)[0])
        x.SR.destroy(small)


def test_migrate_send_errors_change_nothing(xapi, halted):
    x, vm = xapi, halted
    (vbd, vdi), = disks(x, vm).items()
    iso = new_sr(x, "iso")
    before = vm_state(x, vm), set(x.VDI.get_all())
    bad = {k: v for k, v in dest(x).items() if k != "xenops"}
    assert failure(x.VM.migrate_send, vm, bad, False, {}, {}, {}, {}, {}) == [
        "INTERNAL_ERROR", "Not_found"]
    assert failure(x.VM.assert_can_migrate, vm, {**dest(x), "host": "OpaqueRef:elsewhere"},
                   False, {}, {}, {}, {}) == ["VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED"]
    assert failure(x.VM.migrate_send, vm, dest(x), False, {}, {}, {"copy": "true"}, {}, {}) == [
        "OPERATION_NOT_ALLOWED", "Copy mode is disallowed on intra pool storage migration, "
        "try efficient alternatives e.g. VM.copy/clone."]
    assert failure(x.VM.migrate_send, vm, dest(x), False, {vdi: iso}, {}, {}, {}, {}) == [
        "SR_DOES_NOT_SUPPORT_MIGRATION", iso]
    assert failure(x.VM.migrate_send, vm, dest(x), False, {vdi: "OpaqueRef:nosr"}, {}, {}, {},
                   {}) == ["HANDLE_INVALID", "SR", "OpaqueRef:nosr"]
    assert (vm_state(x, vm), set(x.VDI.get_all())) == before
    x.PBD.unplug(x.SR.get_PBDs(iso)[0])
    x.SR.destroy(iso)


# ---- keys and triggers ------------------------------------------------------------------------

def test_send_sysrq(xapi, running, halted):
    x, vm = xapi, running
    assert failure(x.VM.send_sysrq, vm, "ab") == ["INVALID_VALUE", "key", "ab"]
    assert failure(x.VM.send_sysrq, halted, "s") == [
        "VM_BAD_POWER_STATE", halted, "Running", "Halted"]
    x.VM.send_sysrq(vm, "s")  # sync: nothing to see
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.set_actions_after_shutdown(vm, "destroy")
    x.VM.send_sysrq(vm, "o")  # power off: the guest goes down by itself
    wait_for(lambda: x.VM.get_power_state(vm) == "Halted")


def test_send_trigger(xapi, running):
    x, vm = xapi, running
    assert failure(x.VM.send_trigger, vm, "kick") == ["INVALID_VALUE", "trigger", "kick"]
    x.VM.send_trigger(vm, "nmi")
    assert x.VM.get_power_state(vm) == "Running"
    domid = x.VM.get_domid(vm)
    x.VM.set_actions_after_reboot(vm, "restart")
    x.VM.send_trigger(vm, "reset")  # the guest reboots: a new domain
    wait_for(lambda: x.VM.get_domid(vm) not in (domid, "-1")
             and x.VM.get_power_state(vm) == "Running")
    x.VM.send_trigger(vm, "power")  # the power button: it shuts down
    wait_for(lambda: x.VM.get_power_state(vm) == "Halted")
    assert failure(x.VM.send_trigger, vm, "nmi") == ["VM_BAD_POWER_STATE", vm, "Running", "Halted"]


# ---- plugins and what xapi itself does not implement --------------------------------------------

def test_call_plugin(xapi, running, halted):
    x, vm = xapi, running
    assert failure(x.VM.call_plugin, vm, "no-such", "f", {}) == ["XENAPI_MISSING_PLUGIN", "no-such"]
    assert failure(x.VM.call_plugin, halted, "guest-agent-operation", "request-rdp-on", {}) == [
        "VM_BAD_POWER_STATE", halted, "Running", "Halted"]
    err = failure(x.VM.call_plugin, vm, "guest-agent-operation", "nope", {})
    msg = 'The requested fn "nope" could not be found in plugin "guest-agent-operation".'
    assert err == ["XENAPI_PLUGIN_FAILURE", "failed to find fn", msg, msg]
    # one call per VM every 10 s
    err = failure(x.VM.call_plugin, vm, "guest-agent-operation", "request-rdp-on", {})
    assert err[:3] == ["VM_CALL_PLUGIN_RATE_LIMIT", vm, "10."] and 0 < float(err[3]) <= 10


def test_call_plugin_without_guest_feature(xapi, running):
    err = failure(xapi.VM.call_plugin, running, "guest-agent-operation", "request-rdp-off", {})
    assert err[:2] == ["XENAPI_PLUGIN_FAILURE", "failed to execute fn"]


def test_call_host_plugin(xapi, halted):
    """host.call_plugin on the VM's host: the same answers, errors included."""
    x = xapi
    host = x.host.get_all()[0]
    err = failure(x.VM.call_host_plugin, halted, "no-such-plugin", "main", {})
    assert err == ["XENAPI_MISSING_PLUGIN", "no-such-plugin"]
    assert x.VM.call_host_plugin(halted, "updater.py", "check_update", {}) == \
        x.host.call_plugin(host, "updater.py", "check_update", {})


def test_what_xapi_does_not_implement(xapi, halted):
    assert failure(xapi.VM.query_services, halted) == ["NOT_IMPLEMENTED", "query_services"]
    assert failure(xapi.VM.add_to_VCPUs_params_live, halted, "weight", "256") == [
        "NOT_IMPLEMENTED", "add_to_VCPUs_params_live"]


# ---- settings and questions ---------------------------------------------------------------

def test_copy_bios_strings(xapi, halted):
    x, vm = xapi, halted
    host = x.host.get_all()[0]
    x.VM.copy_bios_strings(vm, host)
    assert x.VM.get_bios_strings(vm) == x.host.get_bios_strings(host)
    assert x.VM.get_affinity(vm) == host
    before = vm_state(x, vm)
    assert failure(x.VM.copy_bios_strings, vm, host) == ["VM_BIOS_STRINGS_ALREADY_SET"]
    assert vm_state(x, vm) == before


def test_assert_agile(xapi, halted):
    x, vm = xapi, halted
    (vbd, vdi), = disks(x, vm).items()
    sr = x.VDI.get_SR(vdi)
    assert not x.SR.get_shared(sr)
    assert failure(x.VM.assert_agile, vm) == ["HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", sr]
    x.SR.set_shared(sr, True)
    try:
        x.VM.assert_agile(vm)  # one host, a plugged PBD: agile
        net = new_network(x, "internal")
        vif = x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                            "other_config": {}, "qos_algorithm_type": "",
                            "qos_algorithm_params": {}})
        assert failure(x.VM.assert_agile, vm) == ["HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED", net]
        x.VIF.destroy(vif)
        x.network.destroy(net)
    finally:
        x.SR.set_shared(sr, False)


def test_retrieve_wlb_recommendations_needs_wlb(xapi, halted):
    assert failure(xapi.VM.retrieve_wlb_recommendations, halted) == ["WLB_NOT_INITIALIZED"]


def test_recovery_questions(xapi, server, halted):
    x, vm = xapi, halted
    sid = server.session()._session  # session_to: the pool recovered into is this one
    assert x.VM.get_SRs_required_for_recovery(vm, sid) == []
    x.VM.assert_can_be_recovered(vm, sid)
    assert failure(x.VM.recover, vm, sid, False) == [
        "VM_TO_IMPORT_IS_NOT_NEWER_VERSION", vm, x.VM.get_version(vm), x.VM.get_version(vm)]
    x.VM.recover(vm, sid, True)
    # a disk on an unplugged SR: that SR is required
    other = new_sr(x)
    vdi = x.VDI.create({"SR": other, "virtual_size": str(GiB), "type": "user",
                        "name_label": "dr", "sharable": False, "read_only": False,
                        "other_config": {}})
    vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "3", "bootable": False,
                        "mode": "RW", "type": "Disk", "empty": False, "other_config": {},
                        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    pbd = x.SR.get_PBDs(other)[0]
    x.PBD.unplug(pbd)
    try:
        assert x.VM.get_SRs_required_for_recovery(vm, sid) == [other]
        assert failure(x.VM.assert_can_be_recovered, vm, sid) == ["VM_REQUIRES_SR", vm, other]
        assert failure(x.VM.recover, vm, sid, True) == ["VM_REQUIRES_SR", vm, other]
        assert failure(x.VM.assert_can_be_recovered, vm, "OpaqueRef:nosession") == [
            "HANDLE_INVALID", "session", "OpaqueRef:nosession"]
    finally:
        x.PBD.plug(pbd)
        x.VBD.destroy(vbd)
        x.VDI.destroy(vdi)
        x.PBD.unplug(pbd)
        x.SR.destroy(other)
    app = x.VM_appliance.create({"name_label": "dr-app", "name_description": ""})
    x.VM.set_appliance(vm, app)
    assert failure(x.VM.assert_can_be_recovered, vm, sid) == [
        "VM_IS_PART_OF_AN_APPLIANCE", vm, app]
    x.VM.set_appliance(vm, NULL)
    x.VM_appliance.destroy(app)


def test_import(xapi, server):
    sr = xapi.pool.get_default_SR(xapi.pool.get_all()[0])
    # XenAPI.py names the call by attribute: "import" is a Python keyword
    call = getattr(xapi.VM, "import")
    err = failure(call, server.http.rstrip("/") + "/no-such.xva", sr, False, False)
    assert err == ["IMPORT_ERROR", "XVA streams cannot be read by this server"]
    err = failure(call, "http://127.0.0.1:1/vm.xva", sr, False, False)
    assert err[0] == "INTERNAL_ERROR"
    assert failure(xapi.VM.import_convert, "vmware", "u", "p", sr, {}) == [
        "XENAPI_MISSING_PLUGIN", "conversion"]


def test_secureboot_readiness(xapi, halted):
    x, vm = xapi, halted
    x.VM.set_HVM_boot_params(vm, {"order": "cd"})
    assert x.VM.get_secureboot_readiness(vm) == "not_supported"
    x.VM.set_HVM_boot_params(vm, {"order": "cd", "firmware": "uefi"})
    x.VM.remove_from_platform(vm, "secureboot")
    assert x.VM.get_secureboot_readiness(vm) == "disabled"
    x.VM.add_to_platform(vm, "secureboot", "true")
    assert x.VM.get_secureboot_readiness(vm) == "first_boot"
    x.VM.set_NVRAM(vm, {"EFI-variables": "AAAA"})
    assert failure(x.VM.get_secureboot_readiness, vm)[0] == "INTERNAL_ERROR"


def test_update_secureboot_certificates_on_boot(xapi, halted):
    x, vm = xapi, halted
    assert x.VM.get_secureboot_certificates_state(vm) == "ok"
    x.VM.update_secureboot_certificates_on_boot(vm, True)  # nothing to update: stays ok
    assert x.VM.get_secureboot_certificates_state(vm) == "ok"
    x.VM.update_secureboot_certificates_on_boot(vm, False)
    assert x.VM.get_secureboot_certificates_state(vm) == "ok"
