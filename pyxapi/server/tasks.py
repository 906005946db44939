"""Async.* calls: each runs its handler in the background under a task object."""
from __future__ import annotations

import asyncio
import logging
import time

from ..db.store import NULL, now
from ..errors import ApiError
from ..wire import xmlrpc

log = logging.getLogger("pyxapi.tasks")

FINISHED_TASK_LIFETIME = 3600.0  # seconds a finished task is kept before it is removed


class Tasks:
    def __init__(self, app):
        self.app = app
        self.running: dict[str, asyncio.Task] = {}
        self.finished_at: dict[str, float] = {}

    def create(self, label: str, session: str | None, description: str = "") -> str:
        return self.app.store.create("task", {
            "name_label": label,
            "name_description": description,
            "status": "pending",
            "created": now(),
            "progress": 0.0,
            "resident_on": self.app.host_ref,
            "allowed_operations": ["cancel"],
            "subtask_of": NULL,
        })

    def start_async(self, route, session: str, args: list) -> str:
        from .dispatch import Context

        msg = route.message
        ref = self.create(f"Async.{msg.wire_name}", session)
        ctx = Context(self.app, session, ref, msg)

        async def run():
            try:
                if route.is_coroutine:
                    result = await route.handler(ctx, args)
                else:
                    result = route.handler(ctx, args)
                self.finish(ref, "success", result=result)
            except asyncio.CancelledError:
                self.finish(ref, "cancelled", error=["TASK_CANCELLED", ref])
            except ApiError as e:
                self.finish(ref, "failure", error=e.description)
            except Exception as e:
                log.exception("internal error in task %s", msg.wire_name)
                self.finish(ref, "failure", error=["INTERNAL_ERROR", f"{type(e).__name__}: {e}"])
            finally:
                self.running.pop(ref, None)
                self.app.store.commit()

        self.running[ref] = asyncio.get_running_loop().create_task(run())
        return ref

    def set_progress(self, ref: str, fraction: float) -> None:
        store = self.app.store
        if ref in store.tables["task"]:
            store.update("task", ref, {"progress": max(0.0, min(1.0, float(fraction)))})

    def finish(self, ref: str, status: str, result=None, error=None) -> None:
        store = self.app.store
        if ref not in store.tables["task"]:
            return
        changes = {"status": status, "finished": now(), "allowed_operations": [],
                   "current_operations": {}}
        if status == "success":
            changes["progress"] = 1.0
            changes["result"] = "" if result is None else _encode_value(result)
        if error is not None:
            changes["error_info"] = [str(e) for e in error]
        store.update("task", ref, changes)
        self.finished_at[ref] = time.monotonic()

    def cancel(self, ref: str) -> bool:
        """Ask a running task to stop; False when it is not running here."""
        job = self.running.get(ref)
        if job is None:
            return False
        self.app.store.update("task", ref, {"status": "cancelling"})
        job.cancel()
        return True

    def collect(self) -> None:
        """Remove finished tasks older than FINISHED_TASK_LIFETIME."""
        cutoff = time.monotonic() - FINISHED_TASK_LIFETIME
        store = self.app.store
        for ref, at in list(self.finished_at.items()):
            if at < cutoff:
                del self.finished_at[ref]
                if ref in store.tables["task"]:
                    store.destroy("task", ref)


def _encode_value(value) -> str:
    """A task result as xapi stores it: the XML-RPC `<value>` of the result."""
    out: list[str] = []
    xmlrpc._enc(value, out)
    return "".join(out)
