"""VDI and SR messages of pyxapi/api/vdi_extras.py: CBT and data_destroy, revert, NBD info,
VDI.pool_migrate, DR databases, SR.make/probe_ext and the HA / replication checks, through
XenAPI.py against a real server with the simulator backend."""
import pytest

from tests.test_storage import GiB, MiB, new_sr, new_vbd, new_vdi, new_vm, usage
from tests.test_vm_lifecycle import failure, wait_for

NULL = "OpaqueRef:NULL"


def unplug(x, sr):
    for pbd in x.SR.get_PBDs(sr):
        x.PBD.unplug(pbd)


def plug(x, sr):
    for pbd in x.SR.get_PBDs(sr):
        x.PBD.plug(pbd)


def drop_sr(x, sr):
    for vdi in x.SR.get_VDIs(sr):
        x.VDI.destroy(vdi)
    unplug(x, sr)
    x.SR.destroy(sr)


@pytest.fixture
def sr(xapi):
    sr = new_sr(xapi, "ext", 20 * GiB)
    yield sr
    drop_sr(xapi, sr)


def vdi_state(x, vdi):
    rec = x.VDI.get_record(vdi)
    return {k: rec[k] for k in ("cbt_enabled", "type", "virtual_size", "physical_utilisation",
                                "current_operations", "SR")}


# ---- CBT -----------------------------------------------------------------------------------

def test_enable_disable_cbt(xapi, sr):
    x = xapi
    vdi = new_vdi(x, sr, GiB)
    assert x.VDI.get_cbt_enabled(vdi) is False
    x.VDI.enable_cbt(vdi)
    assert x.VDI.get_cbt_enabled(vdi) is True
    x.VDI.enable_cbt(vdi)  # already: nothing to do
    assert failure(x.VDI.set_on_boot, vdi, "reset") == ["VDI_CBT_ENABLED", vdi]
    assert x.VDI.get_on_boot(vdi) == "persist"
    snap = x.VDI.snapshot(vdi, {})
    assert x.VDI.get_cbt_enabled(snap) is True  # a snapshot keeps the tracking
    assert failure(x.VDI.disable_cbt, snap) == ["OPERATION_NOT_ALLOWED", f"VDI is a snapshot: {snap}"]
    x.VDI.disable_cbt(vdi)
    assert x.VDI.get_cbt_enabled(vdi) is False
    x.VDI.set_on_boot(vdi, "reset")
    assert x.VDI.get_on_boot(vdi) == "reset"


def test_cbt_refusals_change_nothing(xapi, sr):
    x = xapi
    suspend = new_vdi(x, sr, GiB, type="suspend")
    before = vdi_state(x, suspend)
    assert failure(x.VDI.enable_cbt, suspend) == ["VDI_INCOMPATIBLE_TYPE", suspend, "suspend"]
    reset = new_vdi(x, sr, GiB)
    x.VDI.set_on_boot(reset, "reset")
    assert failure(x.VDI.enable_cbt, reset) == ["VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION"]
    plain = new_vdi(x, sr, GiB)
    unplug(x, sr)
    try:
        assert failure(x.VDI.enable_cbt, plain) == ["SR_HAS_NO_PBDS", sr]
    finally:
        plug(x, sr)
    assert vdi_state(x, suspend) == before and x.VDI.get_cbt_enabled(plain) is False


def test_data_destroy(xapi, sr):
    x = xapi
    vdi = new_vdi(x, sr, GiB)
    assert failure(x.VDI.data_destroy, vdi) == ["OPERATION_NOT_ALLOWED", f"VDI is not a snapshot: {vdi}"]
    plain_snap = x.VDI.snapshot(vdi, {})
    assert failure(x.VDI.data_destroy, plain_snap) == ["VDI_NO_CBT_METADATA", plain_snap]
    x.VDI.enable_cbt(vdi)
    snap = x.VDI.snapshot(vdi, {})
    vm = new_vm(x, "cbt holder")
    vbd = new_vbd(x, vm, snap, "1", mode="RO")
    assert failure(x.VDI.data_destroy, snap) == ["VDI_IN_USE", snap, "data_destroy"]
    x.VBD.destroy(vbd)
    x.VM.destroy(vm)
    x.VDI.data_destroy(snap)
    rec = x.VDI.get_record(snap)
    assert rec["type"] == "cbt_metadata" and rec["physical_utilisation"] == "0"
    assert rec["cbt_enabled"] is True and rec["is_a_snapshot"] is True
    x.SR.scan(sr)  # the row outlives its disk
    assert snap in x.SR.get_VDIs(sr)
    assert failure(x.VDI.clone, snap, {}) == ["VDI_INCOMPATIBLE_TYPE", snap, "cbt_metadata"]
    assert failure(x.VDI.copy, snap, sr, NULL, NULL) == ["VDI_INCOMPATIBLE_TYPE", snap, "cbt_metadata"]
    assert failure(x.VDI.get_nbd_info, snap) == ["VDI_INCOMPATIBLE_TYPE", snap, "cbt_metadata"]
    x.VDI.destroy(snap)
    assert snap not in x.VDI.get_all()


# ---- revert --------------------------------------------------------------------------------

def test_revert(xapi, sr):
    x = xapi
    vdi = new_vdi(x, sr, GiB)
    uuid = x.VDI.get_uuid(vdi)
    snap = x.VDI.snapshot(vdi, {})
    x.VDI.revert(snap)
    assert x.VDI.get_uuid(vdi) == uuid and x.VDI.get_snapshot_of(snap) == vdi
    assert failure(x.VDI.revert, vdi) == ["OPERATION_NOT_ALLOWED", f"VDI is not a snapshot: {vdi}"]
    # the disk attached to a running VM cannot be reverted under it
    vm = new_vm(x, "revert holder")
    new_vbd(x, vm, vdi, "0")
    x.VM.start(vm, False, False)
    try:
        before = vdi_state(x, vdi)
        assert failure(x.VDI.revert, snap) == ["VDI_IN_USE", vdi, "revert_to"]
        assert vdi_state(x, vdi) == before
    finally:
        x.VM.hard_shutdown(vm)
        for vbd in x.VM.get_VBDs(vm):
            x.VBD.destroy(vbd)
        x.VM.destroy(vm)
    x.VDI.destroy(vdi)
    assert failure(x.VDI.revert, snap) == ["HANDLE_INVALID", "VDI", vdi]


# ---- NBD ---------------------------------------------------------------------------------------

def test_get_nbd_info(xapi, sr):
    x = xapi
    vdi = new_vdi(x, sr, GiB)
    assert x.VDI.get_nbd_info(vdi) == []  # no network is for NBD
    host = x.host.get_all()[0]
    pif = next(p for p in x.host.get_PIFs(host) if x.PIF.get_management(p))
    net = x.PIF.get_network(pif)
    x.network.add_purpose(net, "nbd")
    try:
        info = x.VDI.get_nbd_info(vdi)
        ip = x.PIF.get_IP(pif)
        assert [i["address"] for i in info] == [ip]
        assert info[0]["port"] == "10809"
        assert info[0]["exportname"].startswith(f"/{x.VDI.get_uuid(vdi)}?session_id=OpaqueRef:")
    finally:
        x.network.remove_purpose(net, "nbd")


# ---- VDI.pool_migrate ----------------------------------------------------------------------------

def test_vdi_pool_migrate(xapi, sr):
    x = xapi
    source = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = new_vdi(x, source, GiB)
    assert failure(x.VDI.pool_migrate, vdi, sr, {}) == ["VDI_NEEDS_VM_FOR_MIGRATE", vdi]
    vm = new_vm(x, "vdi migrate")
    vbd = new_vbd(x, vm, vdi, "0")
    x.VM.start(vm, False, False)
    wait_for(lambda: x.VM.get_guest_metrics(vm) != NULL)
    try:
        x.VDI.enable_cbt(vdi)
        assert failure(x.VDI.pool_migrate, vdi, sr, {}) == ["VDI_CBT_ENABLED", vdi]
        x.VDI.disable_cbt(vdi)
        new = x.VDI.pool_migrate(vdi, sr, {})
        assert new != vdi and x.VDI.get_SR(new) == sr and x.VBD.get_VDI(vbd) == new
        assert vdi not in x.VDI.get_all()
        assert x.VM.get_power_state(vm) == "Running" and x.VBD.get_currently_attached(vbd)
    finally:
        x.VM.hard_shutdown(vm)
        x.VBD.destroy(vbd)
        x.VM.destroy(vm)


# ---- DR databases ----------------------------------------------------------------------------

def test_metadata_databases(xapi, sr):
    x = xapi
    user = new_vdi(x, sr, GiB)
    assert failure(x.VDI.open_database, user) == ["VDI_INCOMPATIBLE_TYPE", user, "user"]
    meta = new_vdi(x, sr, 256 * MiB, type="metadata")
    assert failure(x.VDI.open_database, meta)[0] == "COULD_NOT_IMPORT_DATABASE"
    assert x.VDI.read_database_pool_uuid(meta) == ""
    assert failure(x.SR.assert_supports_database_replication, sr) == [
        "SR_OPERATION_NOT_SUPPORTED", sr]
    assert failure(x.SR.enable_database_replication, sr) == ["SR_OPERATION_NOT_SUPPORTED", sr]
    unplug(x, sr)
    try:
        assert failure(x.SR.assert_supports_database_replication, sr) == ["SR_HAS_NO_PBDS", sr]
    finally:
        plug(x, sr)
    # disabling removes this pool's metadata VDIs of the SR, and only those
    x.SR.disable_database_replication(sr)
    assert meta in x.VDI.get_all()  # of no pool
    rec = x.VDI.get_record(meta)
    x.VDI.forget(meta)
    ours = x.VDI.introduce(rec["uuid"], "DR", "", sr, "metadata", False, False, {},
                           rec["location"], {}, {}, True, rec["virtual_size"], "0",
                           x.pool.get_all()[0], False, rec["snapshot_time"], NULL)
    x.SR.disable_database_replication(sr)
    assert ours not in x.VDI.get_all() and user in x.VDI.get_all()


# ---- SR --------------------------------------------------------------------------------------------

def test_sr_make_and_probe_ext(xapi):
    x = xapi
    host = x.host.get_all()[0]
    assert failure(x.SR.make, host, {}, "0", "x", "", "lvm", "user", {}) == ["MESSAGE_DEPRECATED"]
    assert x.SR.probe_ext(host, {"device": "/dev/sdz"}, "lvm", {}) == []
    assert failure(x.SR.probe_ext, host, {}, "floppyfs", {}) == ["SR_UNKNOWN_DRIVER", "floppyfs"]


def test_assert_can_host_ha_statefile(xapi):
    x = xapi
    small = new_sr(x, "lvm", 16 * MiB)
    try:
        x.SR.assert_can_host_ha_statefile(small)
        new_vdi(x, small, 14 * MiB)  # thick: the space is taken
        assert failure(x.SR.assert_can_host_ha_statefile, small) == [
            "SR_SOURCE_SPACE_INSUFFICIENT", small]
        unplug(x, small)
        assert failure(x.SR.assert_can_host_ha_statefile, small) == ["SR_HAS_NO_PBDS", small]
        plug(x, small)
    finally:
        drop_sr(x, small)
    iso = new_sr(x, "iso")
    try:
        assert failure(x.SR.assert_can_host_ha_statefile, iso) == [
            "SR_OPERATION_NOT_SUPPORTED", iso]
    finally:
        unplug(x, iso)
        x.SR.forget(iso)
