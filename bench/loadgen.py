"""An asyncio (uvloop) HTTP/1.1 keep-alive load generator, for what wrk cannot reach
(Unix sockets). Each connection posts the same body, waits for the whole reply, repeats.

    python -m bench.loadgen (--tcp HOST:PORT | --unix PATH) --body FILE [--path /]
        [--content-type text/xml] [--connections 16] [--duration 5] [--expect Success]

Prints one JSON line: requests, duration, rps, p50/p99 latency (µs), errors.
It is shown not to be the bottleneck by also running it against the floor server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvloop


class Conn(asyncio.Protocol):
    def __init__(self, request: bytes, expect: bytes, stats, stop_at: float):
        self.request, self.expect, self.stats, self.stop_at = request, expect, stats, stop_at
        self.buf = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self._send()

    def _send(self):
        self.t0 = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data):
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            i = head.find(b"content-length:")
            if i < 0:
                self._fail("reply without content-length")
                return
            j = head.find(b"\r\n", i)
            length = int(head[i + 15:j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                return
            now = time.perf_counter()
            ok = head.startswith(b"http/1.1 200") and self.expect in buf[end + 4:total]
            del buf[:total]
            self.stats["latencies"].append(now - self.t0)
            if not ok:
                self.stats["errors"] += 1
            if now >= self.stop_at:
                self.transport.close()
                return
            self._send()

    def _fail(self, why):
        self.stats["errors"] += 1
        self.transport.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


async def run(target: str, unix: bool, body: bytes, path: str, content_type: str,
              connections: int, duration: float, expect: bytes) -> dict:
    loop = asyncio.get_running_loop()
    request = (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    stats = {"latencies": [], "errors": 0}
    start = time.perf_counter()
    stop_at = start + duration
    conns = []
    for _ in range(connections):
        factory = lambda: Conn(request, expect, stats, stop_at)  # noqa: E731
        if unix:
            _, proto = await loop.create_unix_connection(factory, target)
        else:
            host, _, port = target.rpartition(":")
            _, proto = await loop.create_connection(factory, host, int(port))
        conns.append(proto)
    await asyncio.gather(*(c.done for c in conns))
    elapsed = time.perf_counter() - start
    lat = sorted(stats["latencies"])
    n = len(lat)
    return {
        "requests": n,
        "duration_s": round(elapsed, 3),
        "rps": round(n / elapsed, 1),
        "p50_us": round(lat[n // 2] * 1e6) if n else None,
        "p99_us": round(lat[min(n - 1, int(n * 0.99))] * 1e6) if n else None,
        "errors": stats["errors"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--tcp")
    g.add_argument("--unix")
    ap.add_argument("--body", required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--content-type", default="text/xml")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--expect", default="Success")
    a = ap.parse_args()
    with open(a.body, "rb") as f:
        body = f.read()
    result = uvloop.run(run(a.unix or a.tcp, bool(a.unix), body, a.path, a.content_type,
                            a.connections, a.duration, a.expect.encode()))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
