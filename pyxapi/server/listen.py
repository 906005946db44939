"""Run the listeners (HTTP, HTTPS, Unix socket) on one uvloop event loop."""
from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal
from dataclasses import dataclass

import uvicorn

from .asgi import make_asgi
from .tls import server_context

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
    asgi = make_asgi(app)
    servers = []
    for lst in listeners:
        kwargs = dict(lifespan="off", access_log=False, log_level="warning", http="httptools",
                      loop="none", timeout_keep_alive=60, server_header=False, date_header=True)
        if lst.kind == "unix":
            p = pathlib.Path(lst.path)
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.exists():
                p.unlink()
            config = uvicorn.Config(asgi, uds=str(p), **kwargs)
        else:
            config = uvicorn.Config(asgi, host=lst.host, port=lst.port, **kwargs)
        config.load()
        if lst.kind == "https":
            config.ssl = server_context(*tls_files)
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup()
        if server.should_exit:
            raise SystemExit(f"could not listen on {lst.url}")
        if lst.kind == "unix":
            os.chmod(lst.path, 0o600)
        if lst.port == 0 and lst.kind != "unix":
            lst.port = server.servers[0].sockets[0].getsockname()[1]
        servers.append(server)
    await app.started()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready:
        ready(listeners)
    housekeeping = loop.create_task(_housekeeping(app))
    # uvicorn's own tick loop keeps the Date header current
    ticks = [loop.create_task(server.main_loop()) for server in servers]
    await stop.wait()
    housekeeping.cancel()
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*ticks, return_exceptions=True)
    for server in servers:
        await server.shutdown()
    app.close()


async def _housekeeping(app) -> None:
    while True:
        await asyncio.sleep(60)
        app.tasks.collect()
        app.store.prune_changes()
        app.store.commit()
