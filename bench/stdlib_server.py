"""The standard library's XML-RPC server with a thread per connection: what people
use to fake a host. Answers VM.get_name_label (and login) with canned Xen-API replies.

As shipped it speaks HTTP/1.0 and closes every connection after one reply (so a
keep-alive load generator reconnects for each call); `--keep-alive` switches its
handler to HTTP/1.1, its best case, measured too for an honest comparison.

    python -m bench.stdlib_server [--port N] [--keep-alive]    prints `listening: http://127.0.0.1:N/`
"""
from __future__ import annotations

import argparse
import socketserver
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

CANNED_VALUE = "bench VM 0"


class Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ()  # any path, as xapi


class KeepAliveHandler(Handler):
    protocol_version = "HTTP/1.1"  # not the default: answers keep-alive requests in kind


class ThreadedXMLRPCServer(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    request_queue_size = 1024


def main(port: int, keep_alive: bool) -> None:
    handler = KeepAliveHandler if keep_alive else Handler
    server = ThreadedXMLRPCServer(("127.0.0.1", port), handler, logRequests=False, allow_none=True)
    server.register_function(lambda *a: {"Status": "Success", "Value": "OpaqueRef:bench"},
                             "session.login_with_password")
    server.register_function(lambda session, vm: {"Status": "Success", "Value": CANNED_VALUE},
                             "VM.get_name_label")
    print(f"listening: http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--keep-alive", action="store_true",
                    help="speak HTTP/1.1 (the default, as shipped, closes each connection)")
    a = ap.parse_args()
    main(a.port, a.keep_alive)
