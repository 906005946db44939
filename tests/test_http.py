"""The HTTP/1.1 layer (server/http.py) spoken to over raw sockets: keep-alive, pipelined
calls answered in order, HTTP/1.0, Expect: 100-continue, size limit, bad requests,
and non-POST requests (served by the ASGI app)."""
from __future__ import annotations

import socket
import urllib.parse
import xmlrpc.client

from pyxapi.wire import xmlrpc as wire
from tests.server import PASSWORD


def _addr(server):
    u = urllib.parse.urlsplit(server.http)
    return u.hostname, u.port


def _connect(server) -> socket.socket:
    s = socket.create_connection(_addr(server), timeout=10)
    return s


def _post(body: bytes, path="/", version="1.1", extra=b"") -> bytes:
    return (f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: text/xml\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


def _read_reply(f):
    """(status, headers, body) of one reply from a socket file."""
    status = int(f.readline().split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length", 0)))
    return status, headers, body


def _login_body():
    return wire.encode_call("session.login_with_password", ["root", PASSWORD])


def test_keep_alive_and_pipelined_calls_are_answered_in_order(server):
    s = _connect(server)
    f = s.makefile("rb")
    s.sendall(_post(_login_body()))
    status, headers, body = _read_reply(f)
    assert status == 200 and headers["content-type"] == "text/xml" and "date" in headers
    ref = xmlrpc.client.loads(body)[0][0]["Value"]
    # three calls in one write; the replies come back in the order asked
    calls = [("session.get_this_user", [ref, ref]), ("pool.get_all", [ref]),
             ("session.get_auth_user_name", [ref, ref])]
    s.sendall(b"".join(_post(wire.encode_call(m, p)) for m, p in calls))
    replies = [_read_reply(f) for _ in calls]
    assert [r[0] for r in replies] == [200, 200, 200]
    assert b"OpaqueRef:" in replies[1][2] and b"<value>root</value>" in replies[2][2]
    s.close()


def test_pipelined_calls_that_wait_are_answered_in_order(server):
    """Calls that wait (a write waits for its commit, event.from for its timeout) go on
    later than getters that do not: their replies must still come in the order asked,
    each call seeing the writes of those before it, the last one closing the connection."""
    s = _connect(server)
    f = s.makefile("rb")
    s.sendall(_post(_login_body()))
    ref = xmlrpc.client.loads(_read_reply(f)[2])[0][0]["Value"]
    s.sendall(_post(wire.encode_call("VM.get_all_records", [ref])))
    records = xmlrpc.client.loads(_read_reply(f)[2])[0][0]["Value"]
    vm = next(r for r, rec in records.items() if rec["is_a_template"])  # never changes alone
    watched = [f"VM/{vm}"]  # (only this VM: nothing else running here can wake the call)
    s.sendall(_post(wire.encode_call("event.from", [ref, watched, "", 0])))
    token = xmlrpc.client.loads(_read_reply(f)[2])[0][0]["Value"]["token"]
    calls = [("event.from", [ref, watched, token, 0.3]),  # waits its whole timeout: nothing
             ("VM.set_name_description", [ref, vm, "first"]),  # has changed before it
             ("VM.get_name_description", [ref, vm]),
             ("VM.set_name_description", [ref, vm, "second"]),
             ("VM.get_name_description", [ref, vm])]
    s.sendall(b"".join(_post(wire.encode_call(m, p)) for m, p in calls)
              + _post(wire.encode_call("VM.get_name_description", [ref, vm]), version="1.0"))
    values = [xmlrpc.client.loads(_read_reply(f)[2])[0][0]["Value"] for _ in range(len(calls) + 1)]
    assert values[0]["events"] == []
    assert values[1] == values[3] == ""
    assert values[2] == "first"
    assert values[4] == values[5] == "second"
    assert f.read() == b""  # closed after the HTTP/1.0 call's reply
    s.close()


def test_http_1_0_is_answered_and_closed(server):
    s = _connect(server)
    f = s.makefile("rb")
    s.sendall(_post(_login_body(), version="1.0"))
    status, headers, body = _read_reply(f)
    assert status == 200 and b"Success" in body
    assert headers.get("connection") == "close"
    assert f.read() == b""  # the server closed it
    s.close()


def test_expect_100_continue(server):
    s = _connect(server)
    f = s.makefile("rb")
    body = _login_body()
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n"
              b"Expect: 100-continue\r\n\r\n" % len(body))
    assert f.readline().startswith(b"HTTP/1.1 100")
    assert f.readline() == b"\r\n"
    s.sendall(body)
    status, _, reply = _read_reply(f)
    assert status == 200 and b"Success" in reply
    s.close()


def test_oversized_body_is_refused_without_reading_it(server):
    s = _connect(server)
    f = s.makefile("rb")
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (65 * 2**20))
    status, headers, body = _read_reply(f)
    assert status == 413 and b"too large" in body
    assert headers.get("connection") == "close"
    s.close()


def test_malformed_request_gets_400_and_the_server_lives_on(server):
    s = _connect(server)
    f = s.makefile("rb")
    s.sendall(b"POST / HTTP/1.1\r\nContent-Length: nonsense\r\n\r\n")
    status, _, _ = _read_reply(f)
    assert status == 400
    s.close()
    s = _connect(server)
    f = s.makefile("rb")
    s.sendall(_post(_login_body()))
    assert _read_reply(f)[0] == 200
    s.close()


def test_non_post_requests_reach_the_asgi_app(server):
    s = _connect(server)
    f = s.makefile("rb")
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = _read_reply(f)
    assert status == 200 and b"pyxapi" in body and headers["content-type"].startswith("text/plain")
    length = headers["content-length"]
    # HEAD: the same headers, no body (the next reply follows at once)
    s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert f.readline().startswith(b"HTTP/1.1 200")
    head = []
    while (line := f.readline()) != b"\r\n":
        head.append(line.decode().lower())
    assert f"content-length: {length}\r\n" in head
    status, headers, _ = _read_reply(f)
    assert status == 405 and "post" in headers["allow"].lower()
    s.close()
