"""host_crashdump rows from the crash directory (<state dir>/crash), upload and destroy,
through XenAPI.py against a server of its own."""
import io
import tarfile

from tests.helpers import failure, put_receiver


def test_crashdumps_follow_the_crash_directory(fresh_server, tmp_path):
    crash = tmp_path / "state" / "crash"
    dump = crash / "20261101-120000-UTC"
    dump.mkdir(parents=True)
    (dump / "dmesg.txt").write_text("panic: simulated\n")
    (dump / "vmcore").write_bytes(b"\0" * 1000)
    srv = fresh_server()
    x = srv.session().xenapi
    [cd] = x.host_crashdump.get_all()
    rec = x.host_crashdump.get_record(cd)
    assert rec["host"] == x.host.get_all()[0]
    assert rec["size"] == str(1000 + len("panic: simulated\n"))
    assert rec["timestamp"].value == "20261101T12:00:00Z"

    with put_receiver() as (url, received):
        x.host_crashdump.upload(cd, url + "/dumps/", {})
        (path, body), = received
        assert path == "/dumps/20261101-120000-UTC.tar.gz"
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            assert sorted(tar.getnames()) == ["20261101-120000-UTC",
                                              "20261101-120000-UTC/dmesg.txt",
                                              "20261101-120000-UTC/vmcore"]
    assert failure(x.host_crashdump.upload, cd, "", {}) == ["INVALID_VALUE", "url", ""]
    assert failure(x.host_crashdump.upload, cd, "ftp://h/", {}) == [
        "INTERNAL_ERROR", "URL not recognised"]

    # a new dump appears at the next start, one whose directory went is forgotten
    (crash / "20261102-080000-UTC").mkdir()
    srv.stop()
    srv = fresh_server()
    x = srv.session().xenapi
    assert len(x.host_crashdump.get_all()) == 2 and cd in x.host_crashdump.get_all()
    x.host_crashdump.destroy(cd)
    assert not dump.exists() and cd not in x.host_crashdump.get_all()
    (crash / "20261102-080000-UTC").rmdir()
    srv.stop()
    srv = fresh_server()
    assert srv.session().xenapi.host_crashdump.get_all() == []
