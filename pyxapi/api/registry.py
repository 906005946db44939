"""Hand-written actions register here by wire name: @action("VM.start")."""
from __future__ import annotations

import importlib
import pkgutil

ACTIONS: dict[str, object] = {}


def action(*names: str):
    def register(fn):
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
