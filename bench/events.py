"""Events under load: delivery latency and the cost of parked event.from clients.

    python -m bench.events [--smoke] [--watchers 200] [--writes 40] [--duration 4] [--procs 2]

Against a pyxapi server it starts itself (loopback only), it measures:

- **throughput** of an ordinary call (`VM.get_name_label`, bench/loadgen.py in its own process,
  16 keep-alive connections) with no watcher, then with `--watchers` clients parked in
  `event.from(["VM"], token, 300)`: parked clients must cost nothing.
- **delivery latency**, write → event delivered: a writer calls `VM.set_name_label`; the time
  from sending that call to each watcher's event.from reply. Once with a single watcher, then
  with every watcher subscribed to the VM (all of them are woken and answered by each write):
  JSON-RPC watchers in one process, the same spread over `--procs` processes, and XML-RPC
  watchers spread likewise. Figures are p50/p99 over every delivery, in ms.

Two clocks say when a reply was delivered, so the load generator cannot hide in the figure:
the kernel's receive stamp of its last segment (SO_TIMESTAMPNS: on loopback it is taken while
the server's write runs, so it is when the server answered, whatever the client was busy
with), and when the watcher's process read it (`client_seen_*`). The gap between the two is
the client's own queueing. Watchers are raw sockets in plain selector loops (no asyncio),
one process per share; replies are parsed only after every delivery of the write is stamped.
The headline `p50_ms` / `p99_ms` are the kernel stamps with JSON-RPC watchers spread over
`--procs` processes. Bounded: `--writes` writes, each waiting at most 10 s for its deliveries.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

import orjson

from bench.common import PYTHON, ROOT, Client, start_pyxapi, xml_body

DELIVERY_TIMEOUT = 10.0
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; also the cmsg type
_STAMP_SPACE = socket.CMSG_SPACE(16)  # one struct timespec


# ---- one connection --------------------------------------------------------------------------

class Conn:
    """A keep-alive connection speaking JSON-RPC or XML-RPC; every reply is stamped with the
    kernel's receive time of the segment that completed it and the time this process read it
    (both CLOCK_REALTIME ns, comparable across processes)."""

    def __init__(self, port: int, wire: str = "json"):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.wire = wire
        self.buf = bytearray()
        self.body = None  # the last complete reply body, with its stamps
        self.kernel_ns = self.seen_ns = 0
        self.token = ""

    def send(self, method: str, params) -> None:
        if self.wire == "json":
            body = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
            head = b"POST /jsonrpc HTTP/1.1\r\nContent-Type: application/json\r\n"
        else:
            body = xml_body(method, params)
            head = b"POST / HTTP/1.1\r\nContent-Type: text/xml\r\n"
        data = head + b"Host: localhost\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        self.body = None
        if self.sock.send(data) != len(data):  # small, into an idle connection's empty buffer
            raise RuntimeError("request not sent whole")

    def readable(self) -> bool:
        """Read what arrived; True once the reply is complete."""
        data, anc, _, _ = self.sock.recvmsg(1 << 20, _STAMP_SPACE)
        if not data:
            raise ConnectionError("server closed the connection")
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(buf[:end]).lower()
        i = head.find(b"content-length:")
        j = head.find(b"\r\n", i)
        total = end + 4 + int(head[i + 15:j if j >= 0 else len(head)])
        if len(buf) < total:
            return False
        self.seen_ns = time.time_ns()
        self.kernel_ns = _stamp(anc) or self.seen_ns
        self.body = bytes(buf[end + 4:total])
        del buf[:total]
        return True

    def wait(self, timeout: float = DELIVERY_TIMEOUT) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while not (sel.select(max(deadline - time.monotonic(), 0)) and self.readable()):
                if time.monotonic() > deadline:
                    raise RuntimeError("no reply in time")

    def result(self):
        if self.wire == "json":
            reply = orjson.loads(self.body)
            if "error" in reply:
                raise RuntimeError(f"error reply: {reply['error']}")
            return reply["result"]
        (reply,), _ = xmlrpc.client.loads(self.body)
        if reply.get("Status") != "Success":
            raise RuntimeError(f"error reply: {reply.get('ErrorDescription')}")
        return reply["Value"]

    def call(self, method: str, params):
        self.send(method, params)
        self.wait()
        return self.result()


def _stamp(anc) -> int:
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, ns = struct.unpack("qq", data[:16])
            return sec * 1_000_000_000 + ns
    return 0


# ---- a worker process: a share of the watchers -----------------------------------------------

def worker(port: int, n: int, wire: str) -> None:
    """Commands on stdin, one JSON line each, answered by one JSON line on stdout:
    park (send event.from on every connection), pending (how many replied already),
    collect (say `collecting`, then wait for every reply; stamps, then the checks)."""
    conns = [Conn(port, wire) for _ in range(n)]
    out = sys.stdout

    def say(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    say({"connected": n})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "park":
            for c in conns:
                c.send("event.from", [cmd["session"], cmd["classes"], cmd.get("token") or c.token, 300.0])
            say({"parked": n})
        elif op == "pending":
            with selectors.DefaultSelector() as sel:
                for c in conns:
                    sel.register(c.sock, selectors.EVENT_READ)
                say({"returned": len(sel.select(0))})
        elif op == "collect":
            say({"collecting": n})
            say(collect(conns, cmd["vm"]))
        else:
            return


def collect(conns: list[Conn], vm: str) -> dict:
    waiting = {c.sock.fileno(): c for c in conns}
    with selectors.DefaultSelector() as sel:
        for c in conns:
            sel.register(c.sock, selectors.EVENT_READ, c)
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while waiting and time.monotonic() < deadline:
            for key, _ in sel.select(deadline - time.monotonic()):
                if key.data.readable():
                    sel.unregister(key.fileobj)
                    del waiting[key.fd]
    if waiting:
        return {"error": f"{len(waiting)} watchers saw nothing within {DELIVERY_TIMEOUT} s"}
    for c in conns:  # parsed only now, after every stamp is taken
        batch = c.result()
        if not any(e["ref"] == vm for e in batch["events"]):
            return {"error": "a watcher woke without the VM's event"}
        c.token = batch["token"]
    return {"kernel_ns": [c.kernel_ns for c in conns], "seen_ns": [c.seen_ns for c in conns]}


class Watchers:
    """`n` watcher connections spread over `procs` worker processes."""

    def __init__(self, port: int, n: int, procs: int = 1, wire: str = "json"):
        shares = [n // procs + (i < n % procs) for i in range(procs)]
        self.procs = [subprocess.Popen([PYTHON, "-m", "bench.events", "--worker", str(port), str(k), wire],
                                       cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for k in shares if k]
        self.n = n
        self._answers()

    def _send(self, **cmd) -> None:
        for p in self.procs:
            p.stdin.write(json.dumps(cmd) + "\n")
            p.stdin.flush()

    def _answers(self) -> list[dict]:
        answers = []
        for p in self.procs:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("a watcher process died")
            answer = json.loads(line)
            if "error" in answer:
                raise RuntimeError(answer["error"])
            answers.append(answer)
        return answers

    def park(self, session: str, classes, token: str | None = None) -> None:
        self._send(op="park", session=session, classes=classes, token=token)
        self._answers()
        time.sleep(0.2)  # let the server park them all

    def returned(self) -> int:
        self._send(op="pending")
        return sum(a["returned"] for a in self._answers())

    def start_collecting(self, vm: str) -> None:
        self._send(op="collect", vm=vm)
        self._answers()  # every worker is (about to be) waiting in select

    def collected(self) -> tuple[list[int], list[int]]:
        kernel, seen = [], []
        for a in self._answers():
            kernel += a["kernel_ns"]
            seen += a["seen_ns"]
        return kernel, seen

    def close(self) -> None:
        for p in self.procs:
            p.stdin.close()
        for p in self.procs:
            p.wait(timeout=30)


# ---- measurements ----------------------------------------------------------------------------

def percentiles(values: list[float], prefix: str = "") -> dict:
    """p50/p99/max of durations in ns, as ms."""
    v = sorted(values)
    n = len(v)
    if not n:
        return {f"{prefix}p50_ms": None, f"{prefix}p99_ms": None}
    return {f"{prefix}p50_ms": round(v[n // 2] / 1e6, 2),
            f"{prefix}p99_ms": round(v[min(n - 1, int(n * 0.99))] / 1e6, 2)}


def schedstat(pid: int) -> tuple[int, int]:
    """ns a process's main thread has run on a CPU, and waited for one (Linux schedstat)."""
    run, wait, _ = map(int, pathlib.Path(f"/proc/{pid}/schedstat").read_text().split())
    return run, wait


def deliveries(port: int, pid: int, session: str, vm: str, watchers: Watchers, writes: int) -> dict:
    """`writes` renames of `vm`; every watcher's latency for every write, and what the server's
    event loop spent on each write and its deliveries: on a CPU, and waiting for one."""
    writer = Conn(port)
    token = writer.call("event.from", [session, ["pool"], "", 0.0])["token"]
    kernel, seen, write, spread, cpu, wait = [], [], [], [], [], []
    for i in range(writes):
        watchers.park(session, ["VM"], token if i == 0 else None)
        if watchers.returned():
            raise RuntimeError("a watcher came back before the write")
        watchers.start_collecting(vm)
        run0, wait0 = schedstat(pid)
        sent = time.time_ns()
        writer.call("VM.set_name_label", [session, vm, f"bench events {i}"])
        write.append(writer.kernel_ns - sent)
        k, s = watchers.collected()
        run1, wait1 = schedstat(pid)
        if min(k) < sent:
            raise RuntimeError("a watcher's reply predates the write")
        kernel += [t - sent for t in k]
        seen += [t - sent for t in s]
        spread.append((max(k) - min(k)) / max(len(k) - 1, 1))
        cpu.append((run1 - run0) / len(k))
        wait.append(wait1 - wait0)
    writer.sock.close()
    return {"deliveries": len(kernel), **percentiles(kernel), "max_ms": round(max(kernel) / 1e6, 2),
            **percentiles(seen, "client_seen_"), **percentiles(write, "write_"),
            # first to last delivery of a write, per watcher
            "us_per_watcher": round(_median(spread) / 1e3, 1),
            # the server's CPU time for a write and its deliveries, per watcher, and how long
            # it was kept off a CPU meanwhile (a busy machine, the watchers' own processes)
            "server_cpu_us_per_watcher": round(_median(cpu) / 1e3, 1),
            "server_cpu_wait_ms_per_write": round(_median(wait) / 1e6, 2)}


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def loadgen(workdir: pathlib.Path, port: int, session: str, vm: str, duration: float, conns: int) -> dict:
    body = workdir / "events-loadgen-body"
    body.write_bytes(xml_body("VM.get_name_label", [session, vm]))
    out = subprocess.run([PYTHON, "-m", "bench.loadgen", "--tcp", f"127.0.0.1:{port}", "--body", str(body),
                          "--connections", str(conns), "--duration", str(duration)],
                         cwd=ROOT, capture_output=True, text=True, timeout=duration + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(workdir: pathlib.Path, port: int, pid: int, n_watchers: int, writes: int, duration: float,
            conns: int, procs: int) -> dict:
    c = Client(port)
    session = c.login()
    vm = c.call("VM.create", session, {"name_label": "bench events"})
    c.close()
    token = Conn(port).call("event.from", [session, ["pool"], "", 0.0])["token"]
    out = {"watchers": n_watchers, "writes": writes, "watcher_processes": procs,
           "load_average_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}

    alone = loadgen(workdir, port, session, vm, duration, conns)
    watchers = Watchers(port, n_watchers, procs)
    watchers.park(session, ["VM"], token)
    with_parked = loadgen(workdir, port, session, vm, duration, conns)
    if watchers.returned():
        raise RuntimeError("a parked watcher returned during read-only load")
    watchers.start_collecting(vm)  # wake them all, so that none is left parked
    Conn(port).call("VM.set_name_label", [session, vm, "bench events"])
    watchers.collected()
    watchers.close()
    out.update({
        "getter_rps_no_watchers": alone["rps"],
        "getter_rps_with_parked": with_parked["rps"],
        "getter_rps_ratio_parked": round(with_parked["rps"] / alone["rps"], 3) if alone["rps"] else None,
        "getter_p99_us_no_watchers": alone["p99_us"],
        "getter_p99_us_with_parked": with_parked["p99_us"],
        "getter_errors": alone["errors"] + with_parked["errors"],
    })

    def run_with(n, procs, wire):
        w = Watchers(port, n, procs, wire)
        try:
            return deliveries(port, pid, session, vm, w, writes)
        finally:
            w.close()

    one = run_with(1, 1, "json")
    out.update({"one_watcher_p50_ms": one["p50_ms"], "one_watcher_p99_ms": one["p99_ms"]})
    single = run_with(n_watchers, 1, "json")
    spread = run_with(n_watchers, procs, "json")
    xml = run_with(n_watchers, procs, "xml")
    out.update(spread)  # the headline: deliveries, p50_ms, p99_ms, max_ms, client_seen_*, write_*
    out.update({f"one_process_{k}": v for k, v in single.items()
                if k in ("p50_ms", "p99_ms", "client_seen_p50_ms", "client_seen_p99_ms", "us_per_watcher")})
    out.update({f"xmlrpc_{k}": v for k, v in xml.items()
                if k in ("p50_ms", "p99_ms", "client_seen_p99_ms", "write_p99_ms", "us_per_watcher",
                         "server_cpu_us_per_watcher")})
    return out


def run(workdir: pathlib.Path, smoke: bool = False, watchers: int = 200, writes: int | None = None,
        duration: float | None = None, conns: int = 16, procs: int = 2) -> dict:
    """Entry point for `python -m bench` (figures under `events`)."""
    writes = writes or (3 if smoke else 40)
    duration = duration or (1 if smoke else 4)
    server = start_pyxapi(workdir / "events-state")
    try:
        return measure(workdir, server.port, server.pid, watchers, writes, duration, 4 if smoke else conns, procs)
    finally:
        server.stop()


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        return worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--watchers", type=int, default=200)
    ap.add_argument("--writes", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--procs", type=int, default=2,
                    help="processes the watchers are spread over (default: one per CPU of a 2-CPU box)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyxapi-bench-events-") as tmp:
        result = run(pathlib.Path(tmp), a.smoke, a.watchers, a.writes, a.duration, a.connections, a.procs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
