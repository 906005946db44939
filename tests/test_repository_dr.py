"""Repository.introduce_bundle / introduce_remote_pool and DR_task.create through XenAPI.py."""
from tests.test_vm_lifecycle import failure

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_bundle_repository_is_one_a_pool(xapi):
    x = xapi
    before = x.Repository.get_all()
    repo = x.Repository.introduce_bundle("bundle", "uploaded updates")
    rec = x.Repository.get_record(repo)
    assert rec["origin"] == "bundle" and rec["update"] and rec["binary_url"] == ""
    assert failure(x.Repository.introduce_bundle, "bundle", "") == [
        "REPOSITORY_ALREADY_EXISTS", repo]
    assert failure(x.Repository.introduce_bundle, "bundle2", "") == [
        "BUNDLE_REPOSITORY_ALREADY_EXISTS", repo]
    assert set(x.Repository.get_all()) == set(before) | {repo}
    x.Repository.forget(repo)
    assert set(x.Repository.get_all()) == set(before)


def test_remote_pool_repository(xapi):
    x = xapi
    before = x.Repository.get_all()
    for bad in ("http://10.0.0.5/repository/enabled", "https://coordinator/repository/enabled",
                "https://10.0.0.5/repository", "not a url"):
        assert failure(x.Repository.introduce_remote_pool, "rp", "", bad, CERT) == [
            "INVALID_BASE_URL", bad]
    assert x.Repository.get_all() == before
    url = "https://10.0.0.5/repository/enabled"
    repo = x.Repository.introduce_remote_pool("remote pool", "their updates", url, CERT)
    rec = x.Repository.get_record(repo)
    assert rec["origin"] == "remote_pool" and rec["binary_url"] == url
    assert rec["certificate"] == CERT and rec["source_url"] == "" and rec["update"]
    assert failure(x.Repository.introduce_remote_pool, "other", "", url, CERT) == [
        "REPOSITORY_ALREADY_EXISTS", repo]
    v6 = "https://[fd00::5]/repository/enabled"
    assert failure(x.Repository.introduce_remote_pool, "remote pool", "", v6, CERT) == [
        "REPOSITORY_ALREADY_EXISTS", repo]
    x.Repository.forget(repo)


def test_dr_task_needs_metadata_capable_sr_type(xapi):
    x = xapi
    before = (x.DR_task.get_all(), x.SR.get_all())
    assert failure(x.DR_task.create, "nosuchtype", {}, []) == ["SR_UNKNOWN_DRIVER", "nosuchtype"]
    assert failure(x.DR_task.create, "lvmoiscsi", {"target": "10.0.0.9"}, []) == [
        "OPERATION_NOT_ALLOWED", "Disaster recovery not supported on SRs of type lvmoiscsi"]
    assert (x.DR_task.get_all(), x.SR.get_all()) == before


def test_lvhd_thin_provisioning_needs_the_sm_extension(xapi):
    x = xapi
    host = x.host.get_all()[0]
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    before = x.SR.get_sm_config(sr)
    assert x.host.has_extension(host, "LVHD.enable_thin_provisioning") is False
    assert failure(x.LVHD.enable_thin_provisioning, host, sr, "0", "0") == [
        "MESSAGE_METHOD_UNKNOWN", "LVHD.enable_thin_provisioning"]
    assert failure(x.LVHD.enable_thin_provisioning, host, "OpaqueRef:s", "0", "0") == [
        "HANDLE_INVALID", "SR", "OpaqueRef:s"]
    assert x.SR.get_sm_config(sr) == before
