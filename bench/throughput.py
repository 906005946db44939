"""Call throughput of VM.get_name_label under concurrent keep-alive load.

pyxapi (XML-RPC, JSON-RPC, Unix socket) against the floor server and the standard
library's server, side by side in one run. wrk drives the TCP targets; the asyncio
load generator drives the Unix socket, and is run against the floor over TCP as
well to show it outruns pyxapi (its floor figure must be well above pyxapi's).
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import xmlrpc.client

from bench import wrk
from bench.common import PYTHON, Client, json_body, start_module, start_pyxapi
from bench.fixture import build


def _check(client: Client, body: bytes, path="/", content_type="text/xml") -> None:
    reply = client.post(body, path, content_type)
    if b"bench VM 0" not in reply:
        raise RuntimeError(f"unexpected reply: {reply[:300]!r}")


def _loadgen(workdir: pathlib.Path, target: list[str], body: bytes, conns: int, duration: float,
             path="/", content_type="text/xml") -> dict:
    body_file = workdir / f"loadgen-body-{len(body)}"
    body_file.write_bytes(body)
    out = subprocess.run([PYTHON, "-m", "bench.loadgen", *target, "--body", str(body_file),
                          "--path", path, "--content-type", content_type,
                          "--connections", str(conns), "--duration", str(duration)],
                         capture_output=True, text=True, timeout=duration + 60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(workdir: pathlib.Path, *, connections: int, duration: float, rounds: int) -> dict:
    wrk.ensure_wrk()
    state = workdir / "throughput-state"
    build(str(state), 1)  # one VM, "bench VM 0": the getter's target
    servers = []
    try:
        floor = start_module("bench.floor_server", workdir)
        servers.append(floor)
        stdlib = start_module("bench.stdlib_server", workdir)
        servers.append(stdlib)
        stdlib_ka = start_module("bench.stdlib_server", workdir, "--keep-alive")
        servers.append(stdlib_ka)
        pyx = start_pyxapi(state, unix=True)
        servers.append(pyx)

        client = Client(pyx.port)
        session = client.login()
        vm = next(r for r in client.call("VM.get_all", session)
                  if client.call("VM.get_name_label", session, r) == "bench VM 0")
        # the body XenAPI.py sends (xmlrpc.client's layout)
        xml = xmlrpc.client.dumps((session, vm), "VM.get_name_label").encode()
        jsn = json_body("VM.get_name_label", [session, vm])
        _check(client, xml)
        _check(client, jsn, "/jsonrpc", "application/json")
        client.close()
        for ref_server in (floor, stdlib, stdlib_ka):
            c = Client(ref_server.port)
            _check(c, xml)
            c.close()

        def url(p):
            return f"http://127.0.0.1:{p.port}/"

        xml_script = wrk.script_fixed(xml, "text/xml")
        jsn_script = wrk.script_fixed(jsn, "application/json")
        unix = ["--unix", str(state / "xapi.sock")]
        targets = {
            "floor_xmlrpc": lambda d: wrk.run(url(floor), xml_script, connections, d),
            "stdlib_xmlrpc": lambda d: wrk.run(url(stdlib), xml_script, connections, d),
            "stdlib_keepalive_xmlrpc": lambda d: wrk.run(url(stdlib_ka), xml_script, connections, d),
            "pyxapi_xmlrpc": lambda d: wrk.run(url(pyx), xml_script, connections, d),
            "pyxapi_jsonrpc": lambda d: wrk.run(url(pyx) + "jsonrpc", jsn_script, connections, d),
            "pyxapi_unix_xmlrpc": lambda d: _loadgen(workdir, unix, xml, connections, d),
            "loadgen_floor_tcp": lambda d: _loadgen(workdir, ["--tcp", f"127.0.0.1:{floor.port}"],
                                                    xml, connections, d),
            "loadgen_pyxapi_tcp": lambda d: _loadgen(workdir, ["--tcp", f"127.0.0.1:{pyx.port}"],
                                                     xml, connections, d),
        }
        if duration >= 4:  # warm-up (not for smoke runs)
            for name in ("floor_xmlrpc", "stdlib_keepalive_xmlrpc", "pyxapi_xmlrpc"):
                targets[name](1)
        # The machine is shared and noisy: every target once per round, rounds
        # interleaved, and the median round reported (all rounds' rates are kept).
        runs: dict[str, list] = {name: [] for name in targets}
        for _ in range(rounds):
            for name, fn in targets.items():
                runs[name].append(fn(duration))
        results = {}
        for name, rs in runs.items():
            rs.sort(key=lambda r: r["rps"])
            results[name] = {**rs[len(rs) // 2], "rounds_rps": [r["rps"] for r in rs]}
        results["pyxapi_rss_kb"] = pyx.status()["VmRSS"]
    finally:
        for s in servers:
            s.stop()
    for rs in runs.values():
        for r in rs:
            if r.get("errors"):
                raise RuntimeError(f"load run had errors: {r}")
    floor_rps = results["floor_xmlrpc"]["rps"]
    stdlib_rps = results["stdlib_xmlrpc"]["rps"]
    pyx_rps = results["pyxapi_xmlrpc"]["rps"]
    results["ratios"] = {
        "pyxapi_vs_floor": round(pyx_rps / floor_rps, 3),
        "pyxapi_vs_stdlib": round(pyx_rps / stdlib_rps, 2),
        "pyxapi_vs_stdlib_keepalive": round(pyx_rps / results["stdlib_keepalive_xmlrpc"]["rps"], 2),
        "jsonrpc_vs_floor": round(results["pyxapi_jsonrpc"]["rps"] / floor_rps, 3),
        "unix_vs_floor": round(results["pyxapi_unix_xmlrpc"]["rps"] / floor_rps, 3),
        # > 1 means the asyncio generator drives the floor faster than pyxapi over the Unix
        # socket: it is not what limits the Unix figure
        "loadgen_headroom": round(results["loadgen_floor_tcp"]["rps"]
                                  / results["pyxapi_unix_xmlrpc"]["rps"], 2),
    }
    results["settings"] = {"connections": connections, "duration_s": duration, "rounds": rounds,
                           "wrk_threads": 1}
    return results
