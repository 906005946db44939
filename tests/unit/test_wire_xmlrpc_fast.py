"""The XML-RPC parser's fast path (`_parse_fast`) must agree with the full expat parser
on every body it accepts, and must accept what real clients send for plain calls."""
from __future__ import annotations

import xmlrpc.client

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxapi.wire import WireError
from pyxapi.wire import xmlrpc as x

METHOD = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}(\.[A-Za-z_][A-Za-z0-9_]{0,20}){0,2}", fullmatch=True)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def _full(body):
    try:
        return x._parse_full(body)
    except WireError:
        return "WireError"


def _both(body):
    try:
        got = x.parse_call(body)
    except WireError:
        got = "WireError"
    return got, _full(body)


@settings(max_examples=300, deadline=None)
@given(METHOD, st.lists(TEXT, max_size=4), st.sampled_from(["client", "ours", "untyped", "spaced"]))
def test_fast_path_agrees_with_the_full_parser(method, params, style):
    if style == "client":  # what xmlrpc.client (and so XenAPI.py) sends
        body = xmlrpc.client.dumps(tuple(params), method).encode()
    elif style == "ours":
        body = x.encode_call(method, params)
    elif style == "untyped":
        body = (f"<methodCall><methodName>{method}</methodName><params>"
                + "".join(f"<param><value>{xmlrpc.client.escape(p)}</value></param>" for p in params)
                + "</params></methodCall>").encode("utf-8", "surrogatepass")
    else:
        body = (f"<?xml version=\"1.0\"?>\r\n <methodCall>\t<methodName>{method}</methodName>\n<params>\r\n"
                + "".join(f" <param>\n<value><string>{xmlrpc.client.escape(p)}</string></value>\n</param>"
                          for p in params)
                + "\n</params>\n</methodCall>\n").encode()
    got, full = _both(body)
    assert got == full


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=6), st.integers(min_value=0, max_value=10**6), st.booleans())
def test_mutated_bodies_agree_with_the_full_parser(junk, where, replace):
    body = bytearray(xmlrpc.client.dumps(("OpaqueRef:abc", "é <x>"), "VM.get_name_label").encode())
    i = where % (len(body) + 1)
    body[i:i + (len(junk) if replace else 0)] = junk
    got, full = _both(bytes(body))
    assert got == full


@pytest.mark.parametrize("body", [
    xmlrpc.client.dumps(("OpaqueRef:s", "OpaqueRef:v"), "VM.get_name_label").encode(),
    x.encode_call("session.login_with_password", ["root", "pässword"]),
    b"<methodCall><methodName>pool.get_all</methodName></methodCall>",
    b"<methodCall><methodName>pool.get_all</methodName><params></params></methodCall>",
    xmlrpc.client.dumps(("tab\there", "line\nbreak", "[::1]"), "VM.set_name_description").encode(),
])
def test_plain_calls_take_the_fast_path(body):
    fast = x._parse_fast(body)
    assert fast is not None and fast == x._parse_full(body)


@pytest.mark.parametrize("body", [
    b"<methodCall><methodName>a</methodName><params><param><value>a&amp;b</value></param></params></methodCall>",
    b"<methodCall><methodName>a</methodName><params><param><value><int>1</int></value></param></params></methodCall>",
    b"<methodCall><methodName>a</methodName><params><param><value>a\rb</value></param></params></methodCall>",
    b"<methodCall><methodName>a</methodName><params><param><value>\x01</value></param></params></methodCall>",
    b"<methodCall><methodName>a</methodName><params><param><value>a]]>b</value></param></params></methodCall>",
    b"<methodCall><methodName>a</methodName><params><param><value>\xff</value></param></params></methodCall>",
    b"<methodCall><methodName>a</methodName><params><param><value>\xef\xbf\xbe</value></param></params></methodCall>",
    b" <?xml version=\"1.0\"?><methodCall><methodName>a</methodName></methodCall>",
    b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><methodCall><methodName>a</methodName></methodCall>",
    b"<methodCall><methodName> a </methodName></methodCall>",
    b"<methodCall><methodName>a</methodName><params><param><value><![CDATA[x]]></value></param></params></methodCall>",
])
def test_anything_unusual_goes_to_the_full_parser(body):
    assert x._parse_fast(body) is None
