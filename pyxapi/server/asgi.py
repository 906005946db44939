"""The HTTP face of the server: a raw ASGI app (no framework in the hot path).

POST /jsonrpc (or a JSON content type) → JSON-RPC; any other POST → XML-RPC,
as xapi does (XenAPI.py posts to /RPC2 or /). Bodies are size-limited.
"""
from __future__ import annotations

MAX_BODY = 64 * 2**20

_XML_HEADERS = [(b"content-type", b"text/xml")]
_JSON_HEADERS = [(b"content-type", b"application/json")]
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]


def make_asgi(app):
    dispatcher = app.dispatcher

    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            return
        method = scope["method"]
        if scope["path"] == "/blob":  # blob contents (api/blob.py), as xapi's /blob handler
            from ..api import blob
            body = await _read_body(receive)
            if body is None:
                return await _reply(send, 413, _TEXT_HEADERS, b"request body too large\n")
            status, ctype, out = await blob.serve(app, method, scope["query_string"], body)
            return await _reply(send, status, [(b"content-type", ctype)], out)
        if method != "POST":
            if method in ("GET", "HEAD"):
                return await _reply(send, 200, _TEXT_HEADERS,
                                    b"pyxapi: a Xen-API server. POST XML-RPC to /, JSON-RPC to /jsonrpc.\n")
            return await _reply(send, 405, _TEXT_HEADERS + [(b"allow", b"GET, HEAD, POST")],
                                b"method not allowed\n")
        body = await _read_body(receive)
        if body is None:
            return await _reply(send, 413, _TEXT_HEADERS,
                                b"request body too large (limit %d bytes)\n" % MAX_BODY)
        if is_jsonrpc(scope["path"], _content_type(scope)):
            out = await dispatcher.handle_jsonrpc(body)
            return await _reply(send, 200, _JSON_HEADERS, out)
        out = await dispatcher.handle_xmlrpc(body)
        return await _reply(send, 200, _XML_HEADERS, out)

    return asgi


async def _read_body(receive) -> bytes | None:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


def is_jsonrpc(path: str, content_type: bytes) -> bool:
    """Which codec a POST speaks (shared with server/http.py, which serves POSTs itself)."""
    return path == "/jsonrpc" or content_type.startswith(b"application/json")


def _content_type(scope) -> bytes:
    for k, v in scope["headers"]:
        if k == b"content-type":
            return v
    return b""


async def _reply(send, status, headers, body: bytes):
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
