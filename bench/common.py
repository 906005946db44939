"""Shared pieces: starting servers on loopback, a tiny keep-alive client, RSS."""
from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

from pyxapi.wire import xmlrpc as wire_xmlrpc

PASSWORD = "bench-root-pw"
PYTHON = sys.executable
ROOT = pathlib.Path(__file__).resolve().parent.parent


def xml_body(method: str, params) -> bytes:
    return wire_xmlrpc.encode_call(method, params)


def json_body(method: str, params) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Client:
    """One keep-alive HTTP connection speaking XML-RPC (or JSON-RPC) to a server."""

    def __init__(self, port: int | None = None, unix: str | None = None, timeout=300):
        self.conn = (_UnixConnection(unix, timeout) if unix
                     else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout))

    def post(self, body: bytes, path="/", content_type="text/xml") -> bytes:
        self.conn.request("POST", path, body, {"Content-Type": content_type})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
        return data

    def call(self, method: str, *params):
        """An XML-RPC call; returns Value or raises RuntimeError with ErrorDescription."""
        (reply,), _ = xmlrpc.client.loads(self.post(xml_body(method, params)))
        if reply.get("Status") != "Success":
            raise RuntimeError(f"{method}: {reply.get('ErrorDescription')}")
        return reply["Value"]

    def login(self, password=PASSWORD) -> str:
        return self.call("session.login_with_password", "root", password, "1.0", "bench")

    def close(self):
        self.conn.close()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process, in kB."""
    out = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class Proc:
    """A child server process that prints `listening: ...` lines when ready."""

    def __init__(self, args, log_path: pathlib.Path, ready=r"^user:|^ready", env=None, timeout=120):
        self.log = open(log_path, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        self.pid = self.proc.pid
        self.urls: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                self.stop()
                raise RuntimeError(f"{args[:4]} exited; see {log_path}")
            m = re.match(r"listening: (\S+)", line)
            if m:
                self.urls.append(m.group(1))
            if re.match(ready, line):
                break
        else:
            self.stop()
            raise RuntimeError(f"{args[:4]} did not start in time")

    @property
    def port(self) -> int:
        for url in self.urls:
            m = re.match(r"https?://[^/]*:(\d+)", url)
            if m and url.startswith("http:"):
                return int(m.group(1))
        raise RuntimeError("no HTTP listener")

    def status(self) -> dict[str, int]:
        return proc_status(self.pid)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, sig)
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


def start_pyxapi(state_dir: pathlib.Path, unix: bool = False) -> Proc:
    state_dir.mkdir(parents=True, exist_ok=True)
    args = [PYTHON, "-m", "pyxapi.cli", "serve", "--http", "127.0.0.1:0",
            "--state-dir", str(state_dir), "--log-level", "WARNING"]
    if unix:
        args += ["--unix", str(state_dir / "xapi.sock")]
    # The server runs as installed, from compiled bytecode: a PYTHONDONTWRITEBYTECODE in the
    # caller's environment would make every start compile pyxapi from source (0.2-0.4 s of
    # a restart). The bytecode goes to a cache of the bench's own, not into the tree.
    env = {"PYXAPI_ROOT_PASSWORD": PASSWORD, "PYTHONDONTWRITEBYTECODE": "",
           "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(), "pyxapi-bench-pycache")}
    return Proc(args, state_dir / "server.log", env=env)


def start_module(module: str, workdir: pathlib.Path, *args: str) -> Proc:
    name = module.rsplit(".", 1)[-1]
    return Proc([PYTHON, "-m", module, *args], workdir / f"{name}.log", ready=r"^listening:")
