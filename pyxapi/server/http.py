"""HTTP/1.1 on httptools, without a framework in the hot path.

Every Xen-API call is a POST: it goes straight to the dispatcher, run in the read
callback itself (no task: see HttpProtocol._start), and its reply leaves in one write
(status line, headers and body together), batched with the other replies of the loop's
turn (HttpServer.send). Any other request
(GET, PUT, …) is handed to the ASGI app of server/asgi.py with its body buffered,
so plain HTTP handlers live there. Measured in bench/: a generic ASGI server's
per-request cycle (scope, events, two writes per reply) cost about half of a
getter call.

Keep-alive and pipelining: requests on one connection are answered in order, one
at a time; idle connections are closed after `KEEP_ALIVE` seconds.
"""
from __future__ import annotations

import asyncio
import collections
import email.utils
import logging
import os
import time
import types
import urllib.parse

import httptools

from .asgi import MAX_BODY, is_jsonrpc
from .audit import peer

log = logging.getLogger("pyxapi.http")

KEEP_ALIVE = 60.0
_PIPELINE_LIMIT = 32  # queued requests on one connection before it stops reading
# A request must arrive whole this many seconds after its first bytes (slow clients, slowloris).
REQUEST_TIMEOUT = float(os.environ.get("PYXAPI_REQUEST_TIMEOUT", "30"))
MAX_HEAD = 1 << 20  # bytes of request line and headers (httptools buffers them unbounded)
_NOTED = frozenset((b"content-type", b"content-length", b"expect"))  # headers acted on
_COPY_MAX = 1 << 16  # bytes of reply body copied behind the head, to leave in one write
_SEND_BATCH = 32  # replies queued before they are written out (see HttpServer.send)

_PATHS = {b"/": "/", b"/jsonrpc": "/jsonrpc"}  # the URLs of almost every call, as paths
_XML = b"text/xml"
_JSON = b"application/json"
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            408: b"Request Timeout", 413: b"Payload Too Large", 431: b"Request Header Fields Too Large",
            500: b"Internal Server Error"}
_heads: dict = {}  # (status, content type, keep-alive) → the head up to content-length
_heads_second = [0]


def _head(status: int, content_type: bytes, length: int, keep_alive: bool, extra=()) -> bytes:
    """Status line and headers. All but content-length are made once a second (the date
    changes) for each kind of reply, and reused."""
    now = int(time.time())
    if _heads_second[0] != now:
        _heads_second[0] = now
        _heads.clear()
    key = (status, content_type, keep_alive)
    fixed = None if extra else _heads.get(key)  # (extra headers carry per-reply values)
    if fixed is None:
        reason = _REASONS.get(status) or b"Status"
        parts = [b"HTTP/1.1 %d %s\r\ndate: %s\r\ncontent-type: %s\r\n"
                 % (status, reason, email.utils.formatdate(now, usegmt=True).encode(), content_type)]
        for name, value in extra:
            parts.append(name + b": " + value + b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"content-length: ")
        fixed = b"".join(parts)
        if not extra:
            _heads[key] = fixed
    return fixed + b"%d\r\n\r\n" % length


# A parsed request, as a plain tuple (made for every call: a tuple costs least):
# (method, url, headers [(lower-case name, value)], body, keep_alive, http version,
#  content type, body too large)
_Request = tuple


class HttpServer:
    """What every connection shares: the dispatcher, the ASGI app, the open connections."""

    def __init__(self, app, asgi):
        self.dispatcher = app.dispatcher
        self.asgi = asgi
        self.connections: set[HttpProtocol] = set()
        self.outbox: list = []  # (transport, reply, close after) not yet written: see send

    def send(self, transport, out, close: bool) -> None:
        """Queue a reply; the queue is written out when it holds _SEND_BATCH replies, and
        at the end of this turn of the event loop. Replies written back to back wake each
        client process once for many of its sockets rather than once per socket: the
        wake-ups were most of the server's cost of answering 200 parked event.from
        watchers at once (about 25% less server CPU per watcher, measured by bench/events.py).
        A reply waits at most for the rest of its batch; order on a connection is kept."""
        outbox = self.outbox
        if not outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        outbox.append((transport, out, close))
        if len(outbox) >= _SEND_BATCH:
            self._flush()

    def _flush(self) -> None:
        batch, self.outbox = self.outbox, []
        for transport, out, close in batch:
            if transport.is_closing():
                continue
            if type(out) is tuple:
                transport.writelines(out)
            else:
                transport.write(out)
            if close:
                transport.close()

    def protocol_factory(self, scheme: str):
        return lambda: HttpProtocol(self, scheme)

    async def sweep_idle(self) -> None:
        """Close keep-alive connections idle for longer than KEEP_ALIVE."""
        while True:
            await asyncio.sleep(KEEP_ALIVE / 4)
            limit = time.monotonic() - KEEP_ALIVE
            for conn in list(self.connections):
                if not conn.busy and conn.last_active < limit:
                    conn.transport.close()

    async def shutdown(self, grace: float = 5.0) -> None:
        """Close idle connections now, busy ones after their reply (or after `grace` s)."""
        self._flush()  # replies already made go out first
        for conn in list(self.connections):
            conn.close_when_idle()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.transport.abort()


class HttpProtocol(asyncio.Protocol):
    def __init__(self, server: HttpServer, scheme: str):
        self.server = server
        self.scheme = scheme
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.busy = False
        self.closing = False
        self.queue: collections.deque[_Request] = collections.deque()
        self.last_active = time.monotonic()
        self.disconnected: asyncio.Future | None = None
        self._url = b""
        self._headers: list = []
        self._body: list = []
        self._size = 0
        self.peer = ""
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = False
        self._in_message = False
        self._head_size = 0
        self._content_type = b""

    # ---- transport -----------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        # kept: asyncio.get_running_loop() makes a getpid() system call each time (3.11)
        self.loop = asyncio.get_running_loop()
        self.server.connections.add(self)
        addr = transport.get_extra_info("peername")
        self.peer = addr[0] if isinstance(addr, tuple) else ""

    def connection_lost(self, exc):
        self.server.connections.discard(self)
        self.queue.clear()
        if self._deadline is not None:
            self._deadline.cancel()
        if self.disconnected is not None and not self.disconnected.done():
            self.disconnected.set_result(None)

    def data_received(self, data: bytes):
        self.last_active = time.monotonic()
        if not self._in_message:  # a request begins (what an on_message_begin would say)
            self._in_message = self._in_head = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, b"protocol upgrades are not supported\n")
        except httptools.HttpParserError:
            self._refuse(400, b"invalid HTTP request\n")
        if self._in_head:
            self._head_size += len(data)
            if self._head_size > MAX_HEAD:
                self._refuse(431, b"request head too large\n")
        # A request left incomplete gets its clock (most arrive whole in one read: no timer).
        if self._in_message and self._deadline is None and not self.transport.is_closing():
            self._deadline = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.busy:  # (while busy, the next request's clock restarts with its next bytes)
            self._refuse(408, b"request not received in time\n")

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy:
            self.transport.close()

    def _refuse(self, status: int, text: bytes) -> None:
        """Answer and close: the connection's byte stream cannot be trusted further."""
        self.transport.write(_head(status, b"text/plain; charset=utf-8", len(text), False) + text)
        self.transport.close()

    # ---- parser callbacks ------------------------------------------------------

    # The callbacks every request runs, kept few: there is no on_message_begin (the state
    # is reset when a message completes) nor on_headers_complete (what it would check is
    # checked as each header arrives).

    def on_url(self, url: bytes):
        self._url += url
        self._in_message = self._in_head = True  # (a request after another in one read)

    def on_header(self, name: bytes, value: bytes):
        name = name.lower()
        self._headers.append((name, value))
        if name in _NOTED:
            if name == b"content-type":
                self._content_type = value
            elif name == b"content-length":
                if value.isdigit() and int(value) > MAX_BODY:
                    self._refuse(413, b"request body too large (limit %d bytes)\n" % MAX_BODY)
            elif value.lower() == b"100-continue":  # expect
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes):
        self._in_head = False
        self._size += len(body)
        if self._size > MAX_BODY:
            self._body = []
        else:
            self._body.append(body)

    def on_message_complete(self):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        p = self.parser
        req = (p.get_method(), self._url, self._headers, b"".join(self._body),
               p.should_keep_alive(), p.get_http_version(), self._content_type,
               self._size > MAX_BODY)
        self._in_message = self._in_head = False
        self._head_size = self._size = 0
        self._url, self._headers, self._body, self._content_type = b"", [], [], b""
        if self.busy:
            self.queue.append(req)
            if len(self.queue) >= _PIPELINE_LIMIT:
                self.transport.pause_reading()
        else:
            self._start(req)

    # ---- requests ----------------------------------------------------------------

    def _start(self, req: _Request | None) -> None:
        """Serve `req`, then the requests queued behind it, each run at once in this callback:
        most calls (getters) never wait, and so need no task and no turn of the event loop
        (a task per request cost about a tenth of a getter)."""
        while req is not None:
            self.busy = True
            serving = self._serve(req)
            try:
                waiting = serving.send(None)
            except StopIteration as done:
                req = self._next() if done.value else None
            else:
                self._wait(serving, waiting)
                return

    def _wait(self, serving, waiting) -> None:
        """The call waits, most often for the commit of its writes: it goes on inside the
        callback of what it waits for, so a write's reply leaves as soon as its commit is
        done, before the replies of the readers that commit woke. A call that waits again
        goes on as a task, which takes up the queue when it ends."""
        if asyncio.isfuture(waiting):
            waiting._asyncio_future_blocking = False  # (taken over, as a task would)
            waiting.add_done_callback(lambda _: self._go_on_now(serving))
        else:  # a bare yield (asyncio.sleep(0))
            self.loop.create_task(self._go_on(serving, waiting))

    def _go_on_now(self, serving) -> None:
        try:
            waiting = serving.send(None)
        except StopIteration as done:
            self._start(self._next() if done.value else None)
        else:
            self.loop.create_task(self._go_on(serving, waiting))

    async def _go_on(self, serving, waiting) -> None:
        if await _resume(serving, waiting):
            self._start(self._next())

    def _next(self) -> _Request | None:
        self.busy = False
        if not self.queue:
            return None
        req = self.queue.popleft()
        if len(self.queue) < _PIPELINE_LIMIT // 2:
            self.transport.resume_reading()
        return req

    async def _serve(self, req: _Request) -> bool:
        """Answer one request; True if the connection stays open for the next."""
        method, url, _, body, keep_alive, _, content_type, too_large = req
        peer.set(self.peer)  # for the login throttle and the audit log
        keep_alive = keep_alive and not self.closing
        try:
            if too_large:
                text = b"request body too large (limit %d bytes)\n" % MAX_BODY
                out = _head(413, b"text/plain; charset=utf-8", len(text), False) + text
                keep_alive = False
            elif method == b"POST":
                d = self.server.dispatcher
                path = _PATHS.get(url) or httptools.parse_url(url).path.decode("latin-1")
                if is_jsonrpc(path, content_type):
                    body, ctype = await d.handle_jsonrpc(body), _JSON
                else:
                    body, ctype = await d.handle_xmlrpc(body), _XML
                out = _head(200, ctype, len(body), keep_alive)
                # a big reply (tens of MB: every record of a pool) is sent behind its head,
                # not copied there
                out = (out, body) if len(body) > _COPY_MAX else out + body
            else:
                out, keep_alive = await self._asgi(req, keep_alive)
        except Exception:
            log.exception("internal error answering %s %r", method, url)
            text = b"internal server error\n"
            out = _head(500, b"text/plain; charset=utf-8", len(text), False) + text
            keep_alive = False
        transport = self.transport
        if transport.is_closing():
            return False
        self.server.send(transport, out, not keep_alive)
        self.last_active = time.monotonic()
        return keep_alive

    async def _asgi(self, req: _Request, keep_alive: bool) -> tuple[bytes, bool]:
        """Run a non-RPC request through the ASGI app; the reply is buffered."""
        method, raw_url, headers, request_body, _, version, _, _ = req
        url = httptools.parse_url(raw_url)
        raw_path = url.path
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version, "method": method.decode("latin-1"),
            "scheme": self.scheme, "path": urllib.parse.unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path, "query_string": url.query or b"", "root_path": "",
            "headers": headers, "server": self.transport.get_extra_info("sockname"),
            "client": self.transport.get_extra_info("peername"),
        }
        sent_body = False

        async def receive():
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": request_body, "more_body": False}
            if self.disconnected is None:
                self.disconnected = asyncio.get_running_loop().create_future()
            await self.disconnected
            return {"type": "http.disconnect"}

        start: dict = {}
        chunks: list[bytes] = []

        async def send(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.server.asgi(scope, receive, send)
        body = b"".join(chunks)
        length = len(body)
        if method == b"HEAD":
            body = b""
        headers = [(k.lower(), v) for k, v in start.get("headers", [])]
        ctype = next((v for k, v in headers if k == b"content-type"), b"application/octet-stream")
        extra = [(k, v) for k, v in headers
                 if k not in (b"content-type", b"content-length", b"connection", b"date")]
        return _head(start.get("status", 500), ctype, length, keep_alive, extra) + body, keep_alive


@types.coroutine
def _resume(coro, waiting):
    """Go on with a coroutine that was stepped by hand and now waits for `waiting` (what it
    yielded): the task awaiting this hands it what it would have handed the coroutine itself
    (None when `waiting` is done, or an exception such as a cancel), until it returns."""
    while True:
        try:
            try:
                sent = yield waiting
            except BaseException as e:
                waiting = coro.throw(e)
            else:
                waiting = coro.send(sent)
        except StopIteration as done:
            return done.value
