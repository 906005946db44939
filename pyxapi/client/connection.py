"""A Xen-API connection for the command line: XML-RPC over HTTP, HTTPS or a Unix socket.

Requests are written with our own codec (ints as decimal strings, the Xen-API rule);
responses are read with the standard library's XML-RPC parser, the way XenAPI.py does.
Where to connect comes from the command line (`-s`, `--port`, `-u`, `-pw`, `-pwf`,
`--unix`, `--nossl`, `--no-verify`) or the environment (PYXAPI_HOST, PYXAPI_PORT,
PYXAPI_USER, PYXAPI_PASSWORD, PYXAPI_UNIX).
"""
from __future__ import annotations

import getpass
import http.client
import os
import socket
import ssl
import sys
import urllib.parse
import xml.parsers.expat
import xmlrpc.client
from dataclasses import dataclass

from ..wire.xmlrpc import encode_call

DEFAULT_URL = "http://127.0.0.1:8080/"  # where `pyxapi serve` listens by default


class Failure(Exception):
    """A Xen-API failure: `description` is [code, params…]."""

    def __init__(self, description):
        self.description = [str(d) for d in description] or ["UNKNOWN_ERROR"]
        super().__init__(" ".join(self.description))

    @property
    def code(self) -> str:
        return self.description[0]


class UsageError(Exception):
    """Bad command line: printed as it is, exit status 2."""


@dataclass
class Target:
    url: str | None = None  # http://host:port/ or https://host:port/
    unix: str | None = None  # path of the server's Unix socket
    verify: bool = True
    user: str = "root"
    password: str | None = None


def target_from(opts: dict) -> Target:
    """Where and as whom to connect, from parsed options (see xe.parse_args) and the environment."""
    env = os.environ
    t = Target(verify=not opts.get("no-verify"))
    host = opts.get("s") or env.get("PYXAPI_HOST")
    unix = opts.get("unix") or (None if host else env.get("PYXAPI_UNIX"))
    if unix:
        t.unix = unix
    elif host:
        if "://" in host:
            t.url = host
        else:
            scheme = "http" if opts.get("nossl") else "https"
            port = opts.get("port") or opts.get("p") or env.get("PYXAPI_PORT")
            t.url = f"{scheme}://{host}:{port}/" if port else f"{scheme}://{host}/"
    else:
        t.url = DEFAULT_URL
    t.user = opts.get("u") or env.get("PYXAPI_USER") or "root"
    if opts.get("pw") is not None:
        t.password = opts["pw"]
    elif opts.get("pwf"):
        with open(opts["pwf"]) as f:
            t.password = f.readline().rstrip("\n")
    else:
        t.password = env.get("PYXAPI_PASSWORD")
    if t.password is None:
        if not sys.stdin.isatty():
            raise UsageError("no password: give -pw, -pwf FILE or set PYXAPI_PASSWORD")
        t.password = getpass.getpass(f"password for {t.user}: ")
    return t


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout=None):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class Connection:
    """One keep-alive HTTP connection and a logged-in session on it."""

    def __init__(self, target: Target, timeout: float | None = None):
        self.target = target
        self.session: str | None = None
        if target.unix:
            self._http = _UnixHTTPConnection(target.unix, timeout)
            self.where = f"unix:{target.unix}"
            self._path = "/"
            return
        u = urllib.parse.urlsplit(target.url)
        if u.scheme == "https":
            ctx = ssl.create_default_context()
            if not target.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._http = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=timeout, context=ctx)
        elif u.scheme == "http":
            self._http = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
        else:
            raise UsageError(f"unsupported server address {target.url!r}: use http:// or https://")
        self.where = target.url
        self._path = u.path or "/"

    def call(self, method: str, *params):
        """Call without the session; returns the Value or raises Failure."""
        body = encode_call(method, params)
        for attempt in (0, 1):
            try:
                self._http.request("POST", self._path, body, {"Content-Type": "text/xml"})
                response = self._http.getresponse()
                reply = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._http.close()  # the server closed an idle keep-alive: once more
                if attempt:
                    raise
        if response.status != 200:
            raise ConnectionError(f"{self.where} answered HTTP {response.status} {response.reason}")
        try:
            (result,), _ = xmlrpc.client.loads(reply)
        except xmlrpc.client.Fault as e:
            raise Failure(["XMLRPC_FAULT", str(e.faultCode), e.faultString]) from None
        except (ValueError, xml.parsers.expat.ExpatError):
            raise ConnectionError(f"{self.where} did not answer in XML-RPC") from None
        if result.get("Status") != "Success":
            raise Failure(result.get("ErrorDescription") or [])
        return _plain(result.get("Value"))

    def api(self, method: str, *params):
        """Call a message that takes the session."""
        return self.call(method, self.session, *params)

    def login(self) -> None:
        self.session = self.call("session.login_with_password", self.target.user,
                                 self.target.password, "2.21", "pyxapi-cli")

    def close(self) -> None:
        if self.session:
            try:
                self.api("session.logout")
            except (Failure, OSError):
                pass
            self.session = None
        self._http.close()


def _plain(v):
    """xmlrpc.client's wrappers to plain values (datetimes stay in xapi's text form)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, xmlrpc.client.DateTime):
        return v.value
    if isinstance(v, xmlrpc.client.Binary):
        return v.data
    return v


def decode_value(text: str):
    """A task's result: the XML-RPC `<value>` text xapi stores in task.result."""
    if not text:
        return None
    doc = f"<methodResponse><params><param>{text}</param></params></methodResponse>"
    (value,), _ = xmlrpc.client.loads(doc)
    return _plain(value)
