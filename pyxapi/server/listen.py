"""Run the listeners (HTTP, HTTPS, Unix socket) on one uvloop event loop (server/http.py)."""
from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal
from dataclasses import dataclass

from .asgi import make_asgi
from .http import HttpServer

log = logging.getLogger("pyxapi")


@dataclass
class Listener:
    kind: str  # http, https, unix
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def url(self) -> str:
        if self.kind == "unix":
            return f"http+unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{host}:{self.port}/"


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    return host or "127.0.0.1", int(port) if port else default_port


async def serve(app, listeners: list[Listener], tls_files=None, ready=None) -> None:
    http = HttpServer(app, make_asgi(app))
    loop = asyncio.get_running_loop()
    servers = []
    for lst in listeners:
        try:
            if lst.kind == "unix":
                p = pathlib.Path(lst.path)
                p.parent.mkdir(parents=True, exist_ok=True)
                if p.exists():
                    p.unlink()
                server = await loop.create_unix_server(http.protocol_factory("http"), str(p),
                                                       backlog=2048)
                os.chmod(lst.path, 0o600)
            else:
                ssl = None
                if lst.kind == "https":  # imported here: cryptography is slow to import
                    from .tls import server_context
                    ssl = server_context(*tls_files)
                server = await loop.create_server(http.protocol_factory(lst.kind), lst.host, lst.port,
                                                  ssl=ssl, backlog=2048)
        except OSError as e:
            raise SystemExit(f"could not listen on {lst.url}: {e}") from None
        if lst.port == 0 and lst.kind != "unix":
            lst.port = server.sockets[0].getsockname()[1]
        servers.append(server)
    await app.started()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready:
        ready(listeners)
    background = [loop.create_task(_housekeeping(app)), loop.create_task(http.sweep_idle())]
    await stop.wait()
    for task in background:
        task.cancel()
    for server in servers:
        server.close()
    await http.shutdown()
    app.close()


async def _housekeeping(app) -> None:
    while True:
        await asyncio.sleep(60)
        app.tasks.collect()
        app.sessions.sweep()
        app.store.prune_changes()
        app.store.commit()
