"""Start a real `pyxapi serve` process for tests, and clients to talk to it."""
from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import httpx
import XenAPI

PASSWORD = "test-root-pw"


class RunningServer:
    def __init__(self, state_dir: pathlib.Path, extra_args=(), env=None, backend="simulator",
                 https=True, unix=True):
        self.state_dir = pathlib.Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.unix_path = str(self.state_dir / "xapi.sock") if unix else None
        args = [sys.executable, "-m", "pyxapi.cli", "serve", "--http", "127.0.0.1:0",
                "--state-dir", str(self.state_dir), "--backend", backend, *extra_args]
        if https:
            args += ["--https", "127.0.0.1:0"]
        if unix:
            args += ["--unix", self.unix_path]
        full_env = {**os.environ, "PYXAPI_ROOT_PASSWORD": PASSWORD, **(env or {})}
        self.log_path = self.state_dir / "server.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, env=full_env,
                                     start_new_session=True)
        self.urls = {}
        self.banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError("server exited:\n" + self.log_path.read_text())
            self.banner.append(line)
            m = re.match(r"listening: (\S+)", line)
            if m:
                url = m.group(1)
                self.urls[url.split(":")[0]] = url
            if line.startswith("user:"):
                break
        else:
            raise RuntimeError("server did not start in time")
        self.http = self.urls["http"]
        self.https = self.urls.get("https")

    def session(self, transport="http", user="root", password=PASSWORD) -> XenAPI.Session:
        if transport == "http":
            s = XenAPI.Session(self.http)
        elif transport == "https":
            s = XenAPI.Session(self.https, ignore_ssl=True)
        elif transport == "unix":
            # XenAPI.py's Unix transport spells the socket path with '_' for '/'
            s = XenAPI.Session("http://" + self.unix_path.replace("/", "_") + "/",
                               transport=XenAPI.UDSTransport())
        else:
            raise ValueError(transport)
        s.xenapi.login_with_password(user, password, "1.0", "pyxapi-tests")
        return s

    def jsonrpc(self, method, params, id_=1, version="2.0") -> dict:
        body = {"method": method, "params": params, "id": id_}
        if version == "2.0":
            body["jsonrpc"] = "2.0"
        r = httpx.post(self.http.rstrip("/") + "/jsonrpc", json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def xmlrpc_raw(self, body: bytes, path="/") -> httpx.Response:
        return httpx.post(self.http.rstrip("/") + path, content=body,
                          headers={"content-type": "text/xml"}, timeout=30)

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.log.close()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
