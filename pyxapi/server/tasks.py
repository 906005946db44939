"""Async.* calls: each runs its handler in the background under a task object.

Clients' own tasks (task.create) live here too. Task operations follow xapi's rule: a user may
act on their own tasks; acting on another user's needs a pool-operator or pool-admin role.
"""
from __future__ import annotations

import asyncio
import logging
import time

from ..db.store import NULL, Journal, journal, new_ref, now
from ..errors import ApiError
from ..wire import xmlrpc

log = logging.getLogger("pyxapi.tasks")

FINISHED_TASK_LIFETIME = 3600.0  # seconds a finished task is kept before it is removed
COMPLETED = frozenset({"success", "failure", "cancelled"})
ANY_TASK_ROLES = frozenset({"pool-admin", "pool-operator"})  # xapi's task.destroy/any


class Tasks:
    def __init__(self, app):
        self.app = app
        self.running: dict[str, asyncio.Task] = {}
        self.finished_at: dict[str, float] = {}
        self.owners: dict[str, str] = {}  # task ref -> user name of the session that made it
        self.sessions: dict[str, str] = {}  # task ref -> the session that made it

    def create(self, label: str, session: str | None, description: str = "",
               cancellable: bool = True) -> str:
        ref = self.app.store.create("task", {
            "name_label": label,
            "name_description": description,
            "status": "pending",
            "created": now(),
            "progress": 0.0,
            "type": "<none/>",
            "resident_on": self.app.host_ref,
            "allowed_operations": ["cancel"] if cancellable else [],
            "subtask_of": NULL,
        })
        if session:  # session.tasks: the tasks it made (xapi's task.session relation)
            row = self.app.store.get("session", session)
            self.owners[ref] = row["auth_user_name"]
            self.sessions[ref] = session
            self.app.store.update("session", session, {"tasks": [*row["tasks"], ref]})
        return ref

    def start_async(self, route, session: str, args: list) -> str:
        from .dispatch import Context

        msg = route.message
        ref = self.create(f"Async.{msg.wire_name}", session)
        ctx = Context(self.app, session, ref, msg)
        writes = Journal()  # the handler's store writes, undone if it is cancelled

        async def run():
            journal.set(writes)  # this asyncio task's own context
            if route.is_coroutine:
                return await route.handler(ctx, args)
            return route.handler(ctx, args)

        job = asyncio.get_running_loop().create_task(run())
        job.add_done_callback(lambda job: self._settle(ref, msg.wire_name, job, writes))
        self.running[ref] = job
        return ref

    def _settle(self, ref: str, name: str, job: asyncio.Task, writes: Journal) -> None:
        """Record how a job ended (also when it was cancelled before it ever ran)."""
        self.running.pop(ref, None)
        writes.open = False
        store = self.app.store
        error = None if job.cancelled() else job.exception()
        result = None
        if job.cancelled() or (isinstance(error, ApiError) and error.code == "TASK_CANCELLED"):
            store.undo(writes)
            status, error = "cancelled", ["TASK_CANCELLED", ref]
        elif isinstance(error, ApiError):
            status, error = "failure", error.description
        elif error is not None:
            log.error("internal error in task %s", name, exc_info=error)
            status, error = "failure", ["INTERNAL_ERROR", f"{type(error).__name__}: {error}"]
        else:
            status, result = "success", job.result()
        self.finish(ref, status, result=result, error=error)
        self.app.audit.task_done(ref, error, result)
        store.commit()

    def set_progress(self, ref: str, fraction: float) -> None:
        store = self.app.store
        if ref in store.tables["task"]:
            store.update("task", ref, {"progress": max(0.0, min(1.0, float(fraction)))})

    def finish(self, ref: str, status: str, result=None, error=None) -> None:
        store = self.app.store
        row = store.tables["task"].get(ref)
        if row is None:
            return
        if "destroy" in row["current_operations"].values():  # task.destroy asked while it ran
            self.forget(ref)
            return
        changes = {"status": status, "finished": now(), "allowed_operations": [],
                   "current_operations": {}, "progress": 1.0}
        if status == "success":
            changes["result"] = "" if result is None else _encode_value(result)
        if error is not None:
            changes["error_info"] = [str(e) for e in error]
        store.update("task", ref, changes)
        self.finished_at[ref] = time.monotonic()

    # ---- task.* on behalf of a session ----------------------------------------------------

    def check_owner(self, session: str, ref: str) -> None:
        """Own tasks are free; another user's need the task.destroy/any permission."""
        user = self.app.store.get("session", session)["auth_user_name"]
        if self.owners.get(ref) == user:
            return
        if self.app.sessions.role(session) not in ANY_TASK_ROLES:
            raise ApiError("RBAC_PERMISSION_DENIED", "task.destroy/any",
                           "No permission in user session")

    def cancel(self, ref: str) -> None:
        """Stop a running Async task; a client's own task is only marked, its owner ends it."""
        store = self.app.store
        if store.get("task", ref)["status"] != "pending":
            return
        changes = {"current_operations": {new_ref(): "cancel"}}
        job = self.running.get(ref)
        if job is not None:
            changes["status"] = "cancelling"
        store.update("task", ref, changes)
        if job is not None:
            job.cancel()

    def destroy(self, ref: str) -> None:
        """Remove a finished task; one still pending goes when it finishes."""
        row = self.app.store.get("task", ref)
        if row["status"] in COMPLETED:
            self.forget(ref)
        else:
            ops = dict(row["current_operations"])
            ops["task"] = "destroy"
            self.app.store.update("task", ref, {"current_operations": ops})

    def set_status(self, ref: str, status: str) -> None:
        """A client ending its own task: completed tasks are collected (or destroyed if asked)."""
        store = self.app.store
        store.update("task", ref, {"status": status})
        if status in COMPLETED:
            if "destroy" in store.get("task", ref)["current_operations"].values():
                self.forget(ref)
            else:
                self.finished_at[ref] = time.monotonic()

    def forget(self, ref: str) -> None:
        store = self.app.store
        self.finished_at.pop(ref, None)
        self.owners.pop(ref, None)
        session = self.sessions.pop(ref, None)
        if session in store.tables["session"]:
            tasks = store.get("session", session)["tasks"]
            store.update("session", session, {"tasks": [t for t in tasks if t != ref]})
        if ref in store.tables["task"]:
            store.destroy("task", ref)

    def collect(self) -> None:
        """Remove finished tasks older than FINISHED_TASK_LIFETIME."""
        cutoff = time.monotonic() - FINISHED_TASK_LIFETIME
        for ref, at in list(self.finished_at.items()):
            if at < cutoff:
                self.forget(ref)


def _encode_value(value) -> str:
    """A task result as xapi stores it: the XML-RPC `<value>` of the result."""
    out: list[str] = []
    xmlrpc._enc(value, out)
    return "".join(out)
