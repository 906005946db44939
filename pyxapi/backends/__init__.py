"""Backends: what the Xen-API actions call for everything touching "hardware".

``make_backend(name, state_dir, **options)`` builds one by name:

* ``"simulator"`` (default): :class:`pyxapi.backends.simulator.SimulatorBackend`, in memory.
* ``"qemu"``: ``pyxapi.backends.qemu.QemuBackend``, imported only when asked for.
"""
from __future__ import annotations

import importlib
import os

from pyxapi.backends.base import Backend

BACKENDS = ("simulator", "qemu")


def make_backend(name: str = "simulator", state_dir: str | os.PathLike | None = None,
                 **options) -> Backend:
    name = (name or "simulator").lower()
    if name in ("simulator", "sim"):
        from pyxapi.backends.simulator import SimulatorBackend
        return SimulatorBackend(state_dir, **options)
    if name == "qemu":
        module = importlib.import_module("pyxapi.backends.qemu")
        cls = getattr(module, "QemuBackend", None)
        if cls is None:
            raise RuntimeError("the qemu backend is not available yet "
                               "(pyxapi.backends.qemu defines no QemuBackend)")
        return cls(state_dir, **options)
    raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")


__all__ = ["Backend", "BACKENDS", "make_backend"]
