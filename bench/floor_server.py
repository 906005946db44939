"""The floor: the least a Python XML-RPC server must do, on uvloop + httptools.

It parses HTTP (httptools), parses the XML-RPC body with expat (method name and
string params collected) and answers a canned Xen-API success reply, its replies
written out in batches as pyxapi's are. No dispatch, no data: what pyxapi does beyond
this is its own cost.

    python -m bench.floor_server [--port N]    prints `listening: http://127.0.0.1:N/`
"""
from __future__ import annotations

import argparse
import asyncio
import email.utils
import time
from xml.parsers import expat

import httptools
import uvloop

CANNED_VALUE = b"bench VM 0"
_BODY = (b'<?xml version="1.0"?><methodResponse><params><param><value><struct>'
         b"<member><name>Status</name><value>Success</value></member>"
         b"<member><name>Value</name><value>" + CANNED_VALUE + b"</value></member>"
         b"</struct></value></param></params></methodResponse>")
_date = [0, b""]


def _reply() -> bytes:
    now = int(time.time())
    if _date[0] != now:  # the Date header, as uvicorn sends it, refreshed once a second
        _date[0], _date[1] = now, email.utils.formatdate(now, usegmt=True).encode()
    return (b"HTTP/1.1 200 OK\r\ndate: " + _date[1] + b"\r\ncontent-type: text/xml\r\n"
            b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


def parse_call(body: bytes) -> tuple[str, list[str]]:
    """Method name and the text of each <value>: a real expat parse of the request."""
    texts: list[str] = []
    out: list = [None, []]

    def end(tag):
        s = "".join(texts)
        texts.clear()
        if tag == "methodName":
            out[0] = s
        elif tag == "value":
            out[1].append(s)

    p = expat.ParserCreate()
    p.buffer_text = True
    p.CharacterDataHandler = texts.append
    p.EndElementHandler = end
    p.Parse(body, True)
    return out[0], out[1]


# Replies are written out together at the end of the event loop's turn (at most 32 at a
# time), as pyxapi's server/http.py does: a client process is then woken once for many
# of its sockets. The floor keeps every I/O saving pyxapi has, so that the ratio measures
# the work pyxapi adds, not a difference in how replies are written.
_outbox: list = []


def _flush() -> None:
    batch = _outbox.copy()
    _outbox.clear()
    for transport, data in batch:
        if not transport.is_closing():
            transport.write(data)


def _send(transport, data: bytes) -> None:
    if not _outbox:
        asyncio.get_running_loop().call_soon(_flush)
    _outbox.append((transport, data))
    if len(_outbox) >= 32:
        _flush()


class FloorProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_body(self, body: bytes):
        self.body.append(body)

    def on_message_complete(self):
        body = b"".join(self.body)
        self.body = []
        try:
            method, _ = parse_call(body)
        except expat.ExpatError:
            method = None
        if not self.parser.should_keep_alive():
            _flush()  # (what is queued for this connection leaves before it closes)
            self.transport.write(_reply() if method else
                                 b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()
        elif not method:
            _send(self.transport, b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        else:
            _send(self.transport, _reply())


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, "127.0.0.1", port, backlog=1024)
    print(f"listening: http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    uvloop.run(main(ap.parse_args().port))
