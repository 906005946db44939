"""Events under load: delivery latency and the cost of parked event.from clients.

    python -m bench.events [--smoke] [--watchers 200] [--writes 40] [--duration 4]

Against a pyxapi server it starts itself (loopback only), it measures:

- **throughput** of an ordinary call (`VM.get_name_label`, bench/loadgen.py in its own process,
  16 keep-alive connections) with no watcher, then with `--watchers` clients parked in
  `event.from(["VM"], token, 300)`: parked clients must cost nothing.
- **delivery latency**, write → event seen: a writer calls `VM.set_name_label`; the time from
  sending that call to each watcher's event.from reply arriving. Once with a single watcher,
  once with every watcher subscribed to the VM (all of them are woken and answered by each
  write). Figures are p50/p99 over every delivery, in ms.

Watchers speak JSON-RPC over raw keep-alive connections in one asyncio loop; a reply is
timestamped when its last byte arrives, and parsed only afterwards. Bounded: `--writes`
writes, each waiting at most 10 s for its deliveries.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import subprocess
import tempfile
import time

import orjson

from bench.common import PYTHON, ROOT, Client, start_pyxapi, xml_body

DELIVERY_TIMEOUT = 10.0


class Rpc(asyncio.Protocol):
    """One keep-alive JSON-RPC connection; `call` resolves to (arrival time, decoded reply)."""

    def __init__(self):
        self.buf = bytearray()
        self.waiter = None

    def connection_made(self, transport):
        self.transport = transport

    def call(self, method: str, params) -> asyncio.Future:
        body = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(b"POST /jsonrpc HTTP/1.1\r\nHost: localhost\r\n"
                             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                             + body)
        return self.waiter

    def data_received(self, data):
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        i = head.find(b"content-length:")
        length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) >= 0 else len(head)])
        if len(buf) < end + 4 + length:
            return
        arrived = time.perf_counter()
        body = bytes(buf[end + 4:end + 4 + length])
        del buf[:end + 4 + length]
        if self.waiter and not self.waiter.done():
            self.waiter.set_result((arrived, body))

    def connection_lost(self, exc):
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))


async def connect(port: int) -> Rpc:
    _, proto = await asyncio.get_running_loop().create_connection(Rpc, "127.0.0.1", port)
    return proto


def result_of(body: bytes):
    reply = orjson.loads(body)
    if "error" in reply:
        raise RuntimeError(f"error reply: {reply['error']}")
    return reply["result"]


def percentiles(values: list[float]) -> dict:
    v = sorted(values)
    n = len(v)
    if not n:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": n, "p50_ms": round(v[n // 2] * 1e3, 2), "p99_ms": round(v[min(n - 1, int(n * 0.99))] * 1e3, 2),
            "max_ms": round(v[-1] * 1e3, 2)}


async def park(watchers: list[Rpc], session: str, classes, tokens: list[str]) -> list[asyncio.Future]:
    calls = [w.call("event.from", [session, classes, t, 300.0]) for w, t in zip(watchers, tokens)]
    await asyncio.sleep(0.2)  # let the server park them all
    return calls


async def deliveries(port: int, session: str, vm: str, watchers: list[Rpc], writes: int) -> list[float]:
    """`writes` renames of `vm`; every watcher's latency for every write, in seconds."""
    writer = await connect(port)
    token = result_of((await writer.call("event.from", [session, ["pool"], "", 0.0]))[1])["token"]
    tokens = [token] * len(watchers)
    latencies = []
    for i in range(writes):
        calls = await park(watchers, session, ["VM"], tokens)
        if any(c.done() for c in calls):
            raise RuntimeError("a watcher came back before the write")
        sent = time.perf_counter()
        await writer.call("VM.set_name_label", [session, vm, f"bench events {i}"])
        done, pending = await asyncio.wait(calls, timeout=DELIVERY_TIMEOUT)
        if pending:
            raise RuntimeError(f"{len(pending)} watchers saw nothing within {DELIVERY_TIMEOUT} s")
        tokens = []
        for call in calls:
            arrived, body = call.result()
            batch = result_of(body)
            if not any(e["ref"] == vm for e in batch["events"]):
                raise RuntimeError("a watcher woke without the VM's event")
            latencies.append(arrived - sent)
            tokens.append(batch["token"])
    writer.transport.close()
    return latencies


def loadgen(workdir: pathlib.Path, port: int, session: str, vm: str, duration: float, conns: int) -> dict:
    body = workdir / "events-loadgen-body"
    body.write_bytes(xml_body("VM.get_name_label", [session, vm]))
    out = subprocess.run([PYTHON, "-m", "bench.loadgen", "--tcp", f"127.0.0.1:{port}", "--body", str(body),
                          "--connections", str(conns), "--duration", str(duration)],
                         cwd=ROOT, capture_output=True, text=True, timeout=duration + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


async def measure(workdir: pathlib.Path, port: int, n_watchers: int, writes: int, duration: float,
                  conns: int) -> dict:
    c = Client(port)
    session = c.login()
    vm = c.call("VM.create", session, {"name_label": "bench events"})
    c.close()
    out = {"watchers": n_watchers, "writes": writes}

    alone = loadgen(workdir, port, session, vm, duration, conns)

    watchers = [await connect(port) for _ in range(n_watchers)]
    token = result_of((await watchers[0].call("event.from", [session, ["pool"], "", 0.0]))[1])["token"]
    parked = await park(watchers, session, ["VM"], [token] * n_watchers)
    with_parked = await asyncio.to_thread(loadgen, workdir, port, session, vm, duration, conns)
    if any(p.done() for p in parked):
        raise RuntimeError("a parked watcher returned during read-only load")
    c = Client(port)  # wake them all, so that none is left parked for the latency runs
    c.call("VM.set_name_label", session, vm, "bench events")
    c.close()
    await asyncio.wait_for(asyncio.gather(*parked), DELIVERY_TIMEOUT)
    for w in watchers:
        w.transport.close()

    single = [await connect(port)]
    one = percentiles(await deliveries(port, session, vm, single, writes))
    single[0].transport.close()

    watchers = [await connect(port) for _ in range(n_watchers)]
    fan = percentiles(await deliveries(port, session, vm, watchers, writes))
    for w in watchers:
        w.transport.close()

    out.update({
        "getter_rps_no_watchers": alone["rps"],
        "getter_rps_with_parked": with_parked["rps"],
        "getter_rps_ratio_parked": round(with_parked["rps"] / alone["rps"], 3) if alone["rps"] else None,
        "getter_p99_us_no_watchers": alone["p99_us"],
        "getter_p99_us_with_parked": with_parked["p99_us"],
        "getter_errors": alone["errors"] + with_parked["errors"],
        "one_watcher_p50_ms": one["p50_ms"],
        "one_watcher_p99_ms": one["p99_ms"],
        "deliveries": fan["n"],  # every watcher woken by every write
        "p50_ms": fan["p50_ms"],
        "p99_ms": fan["p99_ms"],
        "max_ms": fan["max_ms"],
    })
    return out


def run(workdir: pathlib.Path, smoke: bool = False, watchers: int = 200, writes: int | None = None,
        duration: float | None = None, conns: int = 16) -> dict:
    """Entry point for `python -m bench` (figures under `events`)."""
    writes = writes or (3 if smoke else 40)
    duration = duration or (1 if smoke else 4)
    server = start_pyxapi(workdir / "events-state")
    try:
        return asyncio.run(measure(workdir, server.port, watchers, writes, duration, 4 if smoke else conns))
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--watchers", type=int, default=200)
    ap.add_argument("--writes", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--connections", type=int, default=16)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyxapi-bench-events-") as tmp:
        result = run(pathlib.Path(tmp), a.smoke, a.watchers, a.writes, a.duration, a.connections)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
