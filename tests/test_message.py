"""Messages through XenAPI.py: create (with xapi's checks), get, get_since, records,
destroy, destroy_many, destroy_all, and messages in the event.from stream."""
import datetime as dt

import httpx

from tests.helpers import failure
from tests.server import PASSWORD

EPOCH = "19700101T00:00:00Z"


def pool_uuid(x):
    return x.pool.get_uuid(x.pool.get_all()[0])


def host_uuid(x):
    return x.host.get_uuid(x.host.get_all()[0])


def mine(x):
    return {r: m for r, m in x.message.get_all_records().items() if m["name"].startswith("TEST_")}


def test_create_makes_a_full_record(xapi):
    x = xapi
    puuid = pool_uuid(x)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    ref = x.message.create("TEST_CREATED", "3", "Pool", puuid, "a body")
    rec = x.message.get_record(ref)
    assert rec["name"] == "TEST_CREATED" and int(rec["priority"]) == 3
    assert rec["cls"] == "Pool" and rec["obj_uuid"] == puuid and rec["body"] == "a body"
    stamp = dt.datetime.strptime(rec["timestamp"].value, "%Y%m%dT%H:%M:%SZ")
    assert before - dt.timedelta(seconds=2) <= stamp <= before + dt.timedelta(seconds=60)
    assert x.message.get_by_uuid(rec["uuid"]) == ref
    assert ref in x.message.get_all() and ref in x.message.get_all_records()
    x.message.destroy(ref)
    assert ref not in x.message.get_all()
    assert failure(x.message.get_record, ref) == ["HANDLE_INVALID", "message", ref]


def test_create_refuses_an_unknown_object_or_class(xapi):
    x = xapi
    count = len(x.message.get_all())
    assert failure(x.message.create, "TEST_X", "1", "VM", "not-a-uuid", "") == \
        ["UUID_INVALID", "VM", "not-a-uuid"]
    # a pool uuid is not a VM uuid: the object must be of the named class
    assert failure(x.message.create, "TEST_X", "1", "VM", pool_uuid(x), "")[0] == "UUID_INVALID"
    assert failure(x.message.create, "TEST_X", "1", "Nonsense", pool_uuid(x), "") == \
        ["INVALID_VALUE", "cls", "Nonsense"]
    assert len(x.message.get_all()) == count


def test_create_refuses_a_body_xml_cannot_carry(server, xapi):
    s = server.session("http")
    try:
        sid = s._session
        puuid = pool_uuid(xapi)
        count = len(xapi.message.get_all())
        reply = server.jsonrpc("message.create", [sid, "TEST_BAD", 1, "Pool", puuid, "bell\u0007"])
        assert reply["error"]["message"] == "INVALID_VALUE"
        assert reply["error"]["data"] == ["UTF8 expected"]
        assert len(xapi.message.get_all()) == count
    finally:
        s.xenapi.session.logout()


def test_get_by_object_and_since(xapi):
    x = xapi
    puuid, huuid = pool_uuid(x), host_uuid(x)
    a = x.message.create("TEST_GET_A", "1", "Pool", puuid, "")
    b = x.message.create("TEST_GET_B", "2", "Host", huuid, "")
    try:
        on_pool = x.message.get("Pool", puuid, EPOCH)
        assert a in on_pool and b not in on_pool
        assert on_pool[a]["name"] == "TEST_GET_A"
        assert b in x.message.get("Host", huuid, EPOCH)
        # only messages strictly newer than `since`
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y%m%dT%H:%M:%SZ")
        assert x.message.get("Pool", puuid, future) == {}
        since = x.message.get_since(EPOCH)
        assert a in since and b in since
        assert x.message.get_since(future) == {}
        # xapi's error for an unknown object here has no parameters
        assert failure(x.message.get, "VM", "no-such-vm", EPOCH) == ["UUID_INVALID"]
    finally:
        x.message.destroy_many([a, b])
    assert a not in x.message.get_all() and b not in x.message.get_all()


def test_destroy_many_checks_every_ref_first(xapi):
    x = xapi
    puuid = pool_uuid(x)
    a = x.message.create("TEST_MANY", "1", "Pool", puuid, "")
    bogus = "OpaqueRef:00000000-0000-0000-0000-000000000000"
    assert failure(x.message.destroy_many, [a, bogus]) == ["HANDLE_INVALID", "message", bogus]
    assert a in x.message.get_all()  # nothing destroyed by the failed call
    assert failure(x.message.destroy, bogus) == ["HANDLE_INVALID", "message", bogus]
    x.message.destroy_many([a])
    assert a not in x.message.get_all()


def test_messages_flow_through_event_from(xapi):
    x = xapi
    token = getattr(x.event, "from")(["message"], "", 0.0)["token"]
    ref = x.message.create("TEST_EVENT", "5", "Pool", pool_uuid(x), "seen")
    got = getattr(x.event, "from")(["message"], token, 10.0)
    [ev] = [e for e in got["events"] if e["ref"] == ref]
    assert ev["operation"] == "add" and ev["class"] == "message"
    assert ev["snapshot"]["name"] == "TEST_EVENT" and ev["snapshot"]["body"] == "seen"
    token = got["token"]
    x.message.destroy(ref)
    got = getattr(x.event, "from")(["message"], token, 10.0)
    assert [(e["operation"], e["ref"]) for e in got["events"]] == [("del", ref)]


def test_destroy_all_with_filters(fresh_server):
    srv = fresh_server()
    x = srv.session("http").xenapi
    puuid = pool_uuid(x)
    low = x.message.create("TEST_LOW", "1", "Pool", puuid, "")
    high = x.message.create("TEST_HIGH", "5", "Pool", puuid, "")
    # bad filters are refused and destroy nothing
    assert failure(x.message.destroy_all, {"priority": "high"}) == \
        ["INVALID_VALUE", "priority", "high"]
    assert failure(x.message.destroy_all, {"before": "yesterday"}) == \
        ["INVALID_VALUE", "before", "yesterday"]
    assert failure(x.message.destroy_all, {"prority": "1"}) == ["INVALID_VALUE", "prority", "1"]
    assert set(mine(x)) == {low, high}
    # a date filter excluding everything destroys nothing
    x.message.destroy_all({"before": "2000-01-01T00:00:00Z"})
    assert set(mine(x)) == {low, high}
    x.message.destroy_all({"priority": "1", "after": "2000-01-01T00:00:00+02:00"})
    assert set(mine(x)) == {high}
    x.message.destroy_all({})
    assert x.message.get_all() == []


def test_only_the_newest_messages_are_kept(fresh_server):
    """xapi keeps at most 10,000 messages; past that the oldest are dropped as new ones come."""
    srv = fresh_server(https=False, unix=False)
    x = srv.session("http").xenapi
    puuid = pool_uuid(x)
    with httpx.Client(base_url=srv.http, timeout=60) as http:
        session = http.post("/jsonrpc", json={"jsonrpc": "2.0", "id": 0, "params": ["root", PASSWORD],
                                              "method": "session.login_with_password"}).json()["result"]
        made = []
        for i in range(10_005):
            reply = http.post("/jsonrpc", json={"jsonrpc": "2.0", "id": i, "method": "message.create",
                                                "params": [session, f"TEST_{i}", 1, "Pool", puuid, ""]})
            made.append(reply.json()["result"])
    kept = x.message.get_all()
    assert len(kept) == 10_000
    assert set(kept) == set(made[5:])  # the five oldest went
    # after a restart the oldest still go first
    srv.kill()
    x = fresh_server(https=False, unix=False).session("http").xenapi
    newest = x.message.create("TEST_AFTER", "1", "Pool", puuid, "")
    assert set(x.message.get_all()) == set(made[6:]) | {newest}
