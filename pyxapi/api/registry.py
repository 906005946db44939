"""Hand-written actions register here by wire name: @action("VM.start")."""
from __future__ import annotations

import importlib
import pkgutil

ACTIONS: dict[str, object] = {}


def action(*names: str, inline: bool = False):
    """Register fn for `names`. A coroutine action runs as a task of its own (libraries such
    as httpx need one), unless `inline`: it waits only on the store's futures, and runs in
    the request's own callbacks (event.from, with hundreds parked and woken at once)."""
    def register(fn):
        fn.inline = inline
        for name in names:
            if name in ACTIONS:
                raise RuntimeError(f"two actions for {name}")
            ACTIONS[name] = fn
        return fn

    return register


def load_all() -> dict[str, object]:
    """Import every module of pyxapi.api so their @action decorators run."""
    from .. import api

    for info in pkgutil.iter_modules(api.__path__):
        if info.name not in ("registry",):
            importlib.import_module(f"{api.__name__}.{info.name}")
    return ACTIONS
