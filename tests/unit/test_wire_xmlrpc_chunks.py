"""Big XML-RPC outputs are encoded in parts (`_Out`, every `_CHUNK` pieces): the bytes
must be exactly those of encoding the whole at once, whatever falls on a boundary
(characters XML cannot carry, "\r", lone surrogates, markup to escape)."""
from __future__ import annotations

import xmlrpc.client

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxapi.wire import xmlrpc as x

NASTY = st.text(st.sampled_from(["a", "\r", "\x01", "\ud800", "\ufffe", "&", "<", "é", "\n"]),
                max_size=6)
VALUES = st.recursive(
    NASTY | st.integers(-2**63, 2**63 - 1) | st.booleans(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(NASTY, inner, max_size=5),
    max_leaves=40,
)


def _with_chunk(chunk, encode, *args):
    with pytest.MonkeyPatch.context() as m:
        m.setattr(x, "_CHUNK", chunk)
        return encode(*args)


def _whole(encode, *args):
    with pytest.MonkeyPatch.context() as m:
        m.setattr(x, "_CHUNK", 10**9)
        return encode(*args)


@settings(max_examples=300, deadline=None)
@given(value=VALUES, chunk=st.integers(1, 8))
def test_parts_give_the_same_bytes(value, chunk):
    for f in (x.success, x.encode_response):
        assert _with_chunk(chunk, f, value) == _whole(f, value)
    assert _with_chunk(chunk, x.encode_call, "m", [value]) == _whole(x.encode_call, "m", [value])


def test_a_big_reply_is_encoded_in_parts_and_reads_back(monkeypatch):
    records = {f"OpaqueRef:{i}": {"name": f"vm\r{i}\x01<", "n": i, "tags": ["a", "b&"]}
               for i in range(3 * x._CHUNK // 4)}  # 6 pieces a record: several parts
    parts = []
    flush = x._Out.flush
    monkeypatch.setattr(x._Out, "flush", lambda self: (parts.append(len(self)), flush(self)))
    body = x.success(records)
    assert len(parts) > 2
    (reply,), _ = xmlrpc.client.loads(body)
    assert reply["Status"] == "Success"
    assert reply["Value"]["OpaqueRef:7"] == {"name": "vm\r7<", "n": "7", "tags": ["a", "b&"]}
    assert len(reply["Value"]) == len(records)


def test_a_plain_list_of_pieces_is_kept_whole(monkeypatch):
    """tasks.py encodes a task's result into a plain list and joins it itself."""
    monkeypatch.setattr(x, "_CHUNK", 2)
    value = {"a": [{"b": "1"}, {"c": ["2", "3"]}], "d": {"e": "4"}}
    out: list[str] = []
    x._enc(value, out)
    assert "".join(out) == _whole(x.encode_response, value).decode()[
        len(x._RESPONSE_HEAD):-len(x._RESPONSE_TAIL)]
