"""Blobs: blob.create, <Class>.create_new_blob for every class offering it, blob.destroy,
and their bytes over HTTP PUT/GET /blob, through XenAPI.py and httpx against a real server."""
import httpx

from tests.helpers import failure


def blob_url(server, **query):
    return server.http.rstrip("/") + "/blob?" + "&".join(f"{k}={v}" for k, v in query.items())


def test_blob_create_defaults(xapi):
    b = xapi.blob.create("", False)
    rec = xapi.blob.get_record(b)
    assert rec["mime_type"] == "application/octet-stream"
    assert rec["size"] == "0" and rec["public"] is False
    b2 = xapi.blob.create("text/plain", True)
    assert xapi.blob.get_mime_type(b2) == "text/plain" and xapi.blob.get_public(b2) is True
    xapi.blob.destroy(b)
    xapi.blob.destroy(b2)
    assert b not in xapi.blob.get_all()


def _owners(x):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vm = x.VM.create({"name_label": "blob-owner", "memory_static_max": str(2**30),
                      "memory_dynamic_max": str(2**30), "memory_dynamic_min": str(2**30),
                      "memory_static_min": str(2**29), "VCPUs_max": "1",
                      "VCPUs_at_startup": "1", "HVM_boot_policy": "BIOS order"})
    return {"pool": x.pool.get_all()[0], "host": x.host.get_all()[0],
            "network": x.network.get_all()[0], "SR": sr, "VM": vm}


def test_create_new_blob_on_every_owner_class(xapi):
    owners = _owners(xapi)
    try:
        for cls, obj in owners.items():
            api = getattr(xapi, cls)
            blob = api.create_new_blob(obj, "notes", "text/plain", False)
            assert api.get_blobs(obj)["notes"] == blob
            assert xapi.blob.get_mime_type(blob) == "text/plain"
            # the same name again: MAP_DUPLICATE_KEY, and no orphan blob made
            before = set(xapi.blob.get_all())
            err = failure(api.create_new_blob, obj, "notes", "", False)
            assert err == ["MAP_DUPLICATE_KEY", cls, "blobs", api.get_uuid(obj), "notes"]
            assert set(xapi.blob.get_all()) == before
            # destroying the blob takes it out of the owner's map
            xapi.blob.destroy(blob)
            assert "notes" not in api.get_blobs(obj)
    finally:
        xapi.VM.destroy(owners["VM"])


def test_create_new_blob_bad_ref(xapi):
    assert failure(xapi.VM.create_new_blob, "OpaqueRef:nope", "x", "", False) == [
        "HANDLE_INVALID", "VM", "OpaqueRef:nope"]


def test_blob_http_put_get(server, xapi):
    s = server.session()
    sid = s._session
    pool = s.xenapi.pool.get_all()[0]
    blob = s.xenapi.pool.create_new_blob(pool, "data", "application/x-test", False)
    try:
        # no session: refused; bad session: refused; nothing written
        assert httpx.put(blob_url(server, ref=blob), content=b"x").status_code == 401
        assert httpx.put(blob_url(server, ref=blob, session_id="OpaqueRef:bad"),
                         content=b"x").status_code == 401
        assert s.xenapi.blob.get_size(blob) == "0"
        payload = bytes(range(256)) * 40
        r = httpx.put(blob_url(server, ref=blob, session_id=sid), content=payload)
        assert r.status_code == 200
        rec = s.xenapi.blob.get_record(blob)
        assert rec["size"] == str(len(payload))
        assert rec["last_updated"].value != "19700101T00:00:00Z"
        r = httpx.get(blob_url(server, ref=blob, session_id=sid))
        assert r.status_code == 200 and r.content == payload
        assert r.headers["content-type"] == "application/x-test"
        # by uuid too; a private blob is not readable without a session
        uuid = s.xenapi.blob.get_uuid(blob)
        assert httpx.get(blob_url(server, uuid=uuid, session_id=sid)).content == payload
        assert httpx.get(blob_url(server, ref=blob)).status_code == 401
        # a public one is
        s.xenapi.blob.set_public(blob, True)
        assert httpx.get(blob_url(server, ref=blob)).content == payload
        # unknown blob, missing parameter
        assert httpx.get(blob_url(server, ref="OpaqueRef:nope", session_id=sid)).status_code == 404
        assert httpx.get(server.http.rstrip("/") + "/blob").status_code == 400
        # overwritten by a second PUT
        httpx.put(blob_url(server, ref=blob, session_id=sid), content=b"short")
        assert httpx.get(blob_url(server, ref=blob)).content == b"short"
        assert s.xenapi.blob.get_size(blob) == "5"
    finally:
        s.xenapi.blob.destroy(blob)
    assert httpx.get(blob_url(server, ref=blob, session_id=sid)).status_code == 404
    s.xenapi.session.logout()


def test_blob_content_survives_restart(fresh_server):
    srv = fresh_server()
    s = srv.session()
    blob = s.xenapi.blob.create("text/plain", True)
    httpx.put(blob_url(srv, ref=blob, session_id=s._session), content=b"kept")
    srv.stop()
    srv = fresh_server()
    assert httpx.get(blob_url(srv, ref=blob)).content == b"kept"


def test_vm_destroy_takes_its_blobs(xapi):
    vm = _owners(xapi)["VM"]
    blob = xapi.VM.create_new_blob(vm, "config", "", False)
    other = xapi.blob.create("", False)
    xapi.VM.destroy(vm)
    assert blob not in xapi.blob.get_all() and other in xapi.blob.get_all()
    xapi.blob.destroy(other)


def test_blob_put_needs_vm_power_admin(fresh_server):
    import subprocess
    import sys
    srv = fresh_server()
    root = srv.session()
    blob = root.xenapi.blob.create("text/plain", False)
    got = subprocess.run([sys.executable, "-m", "pyxapi.cli", "user", "add", "reader", "--role",
                          "read-only", "--password", "reader-pw", "--state-dir",
                          str(srv.state_dir)], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    reader = srv.session(user="reader", password="reader-pw")
    r = httpx.put(blob_url(srv, ref=blob, session_id=reader._session), content=b"no")
    assert r.status_code == 403 and b"RBAC_PERMISSION_DENIED" in r.content
    assert root.xenapi.blob.get_size(blob) == "0"
    assert httpx.get(blob_url(srv, ref=blob, session_id=reader._session)).status_code == 404
    httpx.put(blob_url(srv, ref=blob, session_id=root._session), content=b"yes")
    assert httpx.get(blob_url(srv, ref=blob, session_id=reader._session)).content == b"yes"
