"""pool_update / pool_patch / host_patch through XenAPI.py: an update introduced from a VDI
holding an update image (its file system: <state dir>/update/<VDI uuid>/vdi), prechecked,
applied, cleaned and destroyed, with xapi's errors for what is not an update."""
import uuid as uuidlib

from tests.test_vm_lifecycle import GiB, failure

UPDATE_XML = """<?xml version="1.0"?>
<update name-label="{label}" uuid="{uuid}" version="1.0" key="/etc/pki/RPM-GPG-KEY-test"
        after-apply-guidance="{guidance}" installation-size="1048576">
  <name-description>Test hotfix</name-description>
</update>
"""


def disk(x, name="update image"):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    return x.VDI.create({"name_label": name, "name_description": "", "SR": sr,
                         "virtual_size": str(GiB // 16), "type": "user", "sharable": False,
                         "read_only": False, "other_config": {}})


def write_image(server, x, vdi, text=None, signed=True, **fields):
    root = server.state_dir / "update" / x.VDI.get_uuid(vdi) / "vdi"
    (root / "repodata").mkdir(parents=True)
    if text is None:
        text = UPDATE_XML.format(**{"label": "XS-TEST", "uuid": str(uuidlib.uuid4()),
                                    "guidance": "restartHost", **fields})
    (root / "update.xml").write_text(text)
    if signed:
        for name in ("update.xml.asc", "repodata/repomd.xml", "repodata/repomd.xml.asc"):
            (root / name).write_text("signed")


def update_image(server, x, **fields):
    vdi = disk(x)
    write_image(server, x, vdi, **fields)
    return vdi


def test_not_an_update_image(server, xapi):
    x = xapi
    before = (x.pool_update.get_all(), x.pool_patch.get_all())
    plain = disk(x)
    assert failure(x.pool_update.introduce, plain) == [
        "INVALID_UPDATE", "missing update document (update.xml) in the package."]
    garbled = disk(x)
    write_image(server, x, garbled, text="<update name-label=")
    assert failure(x.pool_update.introduce, garbled)[1] == (
        "missing update document (update.xml) in the package.")
    for missing, text in [
            ("<update>", '<patch uuid="u"/>'),
            ("<uuid>", '<update name-label="a" version="1"><name-description/></update>'),
            ("<version>", '<update uuid="u" name-label="a"><name-description/></update>'),
            ("<name-description>", '<update uuid="u" name-label="a" version="1"/>')]:
        vdi = disk(x)
        write_image(server, x, vdi, text=text)
        assert failure(x.pool_update.introduce, vdi) == [
            "INVALID_UPDATE", f"missing {missing} in update.xml"]
    unsigned = disk(x)
    write_image(server, x, unsigned, signed=False)
    assert failure(x.pool_update.introduce, unsigned) == ["INVALID_UPDATE", "Invalid signature"]
    assert failure(x.pool_update.introduce, "OpaqueRef:v") == ["HANDLE_INVALID", "VDI",
                                                                "OpaqueRef:v"]
    assert (x.pool_update.get_all(), x.pool_patch.get_all()) == before


def test_introduce_precheck_apply_clean_destroy(server, xapi):
    x = xapi
    host = x.host.get_all()[0]
    uuid = str(uuidlib.uuid4())
    vdi = update_image(server, x, uuid=uuid, label="XS-HOTFIX")
    update = x.pool_update.introduce(vdi)
    rec = x.pool_update.get_record(update)
    assert rec["uuid"] == uuid and rec["name_label"] == "XS-HOTFIX"
    assert rec["name_description"] == "Test hotfix" and rec["version"] == "1.0"
    assert rec["key"] == "RPM-GPG-KEY-test" and rec["installation_size"] == "1048576"
    assert rec["after_apply_guidance"] == ["restartHost"] and rec["vdi"] == vdi
    assert rec["hosts"] == []
    assert x.pool_update.introduce(vdi) == update  # the same image again: the same update
    other = update_image(server, x, uuid=uuid)
    assert failure(x.pool_update.introduce, other) == ["UPDATE_ALREADY_EXISTS", uuid]
    [patch] = [p for p, r in x.pool_patch.get_all_records().items() if r["pool_update"] == update]
    assert x.pool_patch.get_uuid(patch) == "-".join([uuid[:8], "0000", "0000", uuid[19:]])

    assert x.pool_update.precheck(update, host) == "ok"
    assert x.pool_patch.precheck(patch, host) == ""
    x.pool_update.apply(update, host)
    assert x.pool_update.get_hosts(update) == [host]
    assert update in x.host.get_updates_requiring_reboot(host)
    [hp] = x.pool_patch.get_host_patches(patch)
    assert x.host_patch.get_host(hp) == host and x.host_patch.get_applied(hp)
    assert failure(x.pool_update.precheck, update, host) == ["UPDATE_ALREADY_APPLIED", update]
    assert failure(x.pool_update.apply, update, host) == ["UPDATE_ALREADY_APPLIED", update]
    assert failure(x.pool_update.pool_apply, update) == ["UPDATE_ALREADY_APPLIED_IN_POOL", update]
    assert len(x.pool_patch.get_host_patches(patch)) == 1
    assert failure(x.host_patch.apply, hp) == ["MESSAGE_DEPRECATED"]
    assert failure(x.pool_update.destroy, update) == ["UPDATE_IS_APPLIED"]
    assert failure(x.pool_patch.destroy, patch) == ["UPDATE_IS_APPLIED"]

    x.pool_update.pool_clean(update)
    assert x.pool_update.get_vdi(update) == "OpaqueRef:NULL"
    assert vdi not in x.VDI.get_all()
    assert failure(x.pool_update.pool_clean, update) == ["HANDLE_INVALID", "VDI",
                                                         "OpaqueRef:NULL"]
    x.pool_patch.clean(patch)
    x.pool_patch.clean_on_host(patch, host)


def test_pool_apply_and_patch_face(server, xapi):
    x = xapi
    host = x.host.get_all()[0]
    vdi = update_image(server, x, guidance="restartXAPI")
    update = x.pool_update.introduce(vdi)
    [patch] = [p for p, r in x.pool_patch.get_all_records().items() if r["pool_update"] == update]
    x.pool_patch.pool_apply(patch)
    assert x.pool_patch.get_pool_applied(patch)
    assert x.pool_update.get_hosts(update) == [host]
    assert update not in x.host.get_updates_requiring_reboot(host)
    assert failure(x.pool_patch.apply, patch, host) == ["UPDATE_ALREADY_APPLIED", update]


def test_cleaned_update_cannot_be_applied_and_destroy(server, xapi):
    x = xapi
    host = x.host.get_all()[0]
    update = x.pool_update.introduce(update_image(server, x))
    [patch] = [p for p, r in x.pool_patch.get_all_records().items() if r["pool_update"] == update]
    x.pool_patch.pool_clean(patch)
    assert failure(x.pool_update.precheck, update, host) == ["CANNOT_FIND_UPDATE"]
    assert failure(x.pool_update.pool_apply, update) == ["UPDATE_POOL_APPLY_FAILED", host]
    assert x.pool_update.get_hosts(update) == []
    # a new image of the same update brings it back
    again = disk(x)
    uuid = x.pool_update.get_uuid(update)
    write_image(server, x, again, uuid=uuid)
    assert x.pool_update.introduce(again) == update and x.pool_update.get_vdi(update) == again
    x.pool_patch.destroy(patch)
    assert update not in x.pool_update.get_all() and patch not in x.pool_patch.get_all()
