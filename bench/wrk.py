"""Driving wrk (the load generator) with a Lua script that POSTs an RPC body."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import tempfile

_DONE = r'''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
'''


def ensure_wrk() -> str:
    """Path of wrk, installed from Debian's package when missing and running as root."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"],
                       check=False, env=env, capture_output=True)
        path = shutil.which("wrk")
    if not path:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    return path


def _lua_str(b: bytes) -> str:
    s = b.decode()
    level = "=" * 4
    assert f"]{level}]" not in s
    return f"[{level}[{s}]{level}]"


def script_fixed(body: bytes, content_type: str) -> str:
    """Every request posts the same body."""
    return (f'wrk.method = "POST"\nwrk.body = {_lua_str(body)}\n'
            f'wrk.headers["Content-Type"] = "{content_type}"\n' + _DONE)


def script_cycling(bodies: list[tuple[bytes, bytes]], content_type: str) -> str:
    """Request i posts head .. i .. tail of template i % len(bodies) (distinct values)."""
    parts = ",\n".join(f"  {{{_lua_str(h)}, {_lua_str(t)}}}" for h, t in bodies)
    return (f"local templates = {{\n{parts}\n}}\nlocal n = 0\n"
            "request = function()\n  n = n + 1\n  local t = templates[(n % #templates) + 1]\n"
            f'  return wrk.format("POST", nil, {{["Content-Type"] = "{content_type}"}}, '
            "t[1] .. tostring(n) .. t[2])\nend\n" + _DONE)


def run(url: str, script: str, connections: int, duration: float, threads: int = 1) -> dict:
    """Run wrk for `duration` seconds (whole seconds: wrk takes no fractions); returns
    requests, rps, latency percentiles (µs) and error counts."""
    duration = max(1, round(duration))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        proc = subprocess.run(
            [ensure_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
             "--timeout", "30s", "-s", path, url],
            capture_output=True, text=True, timeout=duration + 60)
    finally:
        pathlib.Path(path).unlink()
    for line in proc.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[8:])
            r["rps"] = round(r["requests"] / (r["duration_us"] / 1e6), 1)
            r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
            return r
    raise RuntimeError(f"wrk failed: {proc.stdout}\n{proc.stderr}")
