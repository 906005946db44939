"""A big reply (over server/http.py's _COPY_MAX, sent behind its head rather than copied
there) arrives whole, with the right content-length, over HTTP and HTTPS, and the
keep-alive connection goes on serving calls after it."""
from __future__ import annotations

import xmlrpc.client

import httpx
import pytest

from pyxapi.server.http import _COPY_MAX
from pyxapi.wire.xmlrpc import encode_call
from tests.server import PASSWORD


def _value(r: httpx.Response):
    (reply,), _ = xmlrpc.client.loads(r.content)
    assert reply["Status"] == "Success", reply
    return reply["Value"]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_big_reply_whole_then_the_connection_goes_on(server, xapi, scheme):
    names = {f"big-reply-{scheme}-{i}" for i in range(40)}  # ~3 kB of XML each
    for name in names:
        xapi.VM.create({"name_label": name})
    url = server.https if scheme == "https" else server.http
    with httpx.Client(base_url=url, verify=False, timeout=60) as c:
        ref = _value(c.post("/", content=encode_call(
            "session.login_with_password", ["root", PASSWORD, "1.0", "big-reply"])))
        for _ in range(2):  # twice on one connection, then a small call
            r = c.post("/", content=encode_call("VM.get_all_records", [ref]))
            assert len(r.content) > _COPY_MAX
            assert int(r.headers["content-length"]) == len(r.content)
            assert names <= {rec["name_label"] for rec in _value(r).values()}
        assert _value(c.post("/", content=encode_call("session.get_this_host", [ref, ref])))
        assert _value(c.post("/", content=encode_call("session.logout", [ref]))) == ""
