"""Issue 4: what a cancelled Async task leaves behind, and task collection, in-process.

The server-level tests (tests/test_tasks.py) need a long operation to cancel; these drive the
task machinery directly with a handler that writes, then waits, so the rollback is certain.
"""
import asyncio
import time
from dataclasses import replace

import pytest

from pyxapi.db.store import journal as store_journal
from pyxapi.server import tasks as tasks_mod
from pyxapi.server.app import App


@pytest.fixture
def app(tmp_path):
    app = App(tmp_path / "state")
    yield app
    app.close()


def slow_route(app, started: asyncio.Event):
    """VM.clone's route with a handler that makes a VM and a VBD, changes another VM, then waits."""
    async def handler(ctx, args):
        vm = ctx.store.create("VM", {"name_label": "half-made"})
        ctx.store.create("VBD", {"VM": vm, "userdevice": "0"})
        ctx.store.update("VM", args[0], {"name_label": "touched"})
        ctx.progress(0.5)
        started.set()
        await asyncio.sleep(60)
        return vm

    return replace(app.dispatcher.routes["VM.clone"], handler=handler, is_coroutine=True)


async def boot(app):
    """Start the app inside the test's event loop; returns a root session."""
    await app.start("unit-test-pw")
    await app.started()
    return await app.dispatcher.call("session.login_with_password", ["root", "unit-test-pw"])


def test_cancel_rolls_back_the_handlers_writes(app):
    async def scenario():
        session = await boot(app)
        store = app.store
        victim = store.create("VM", {"name_label": "original"})
        vms, vbds = set(store.refs("VM")), set(store.refs("VBD"))
        started = asyncio.Event()
        task = app.tasks.start_async(slow_route(app, started), session, [victim, "x"])
        await asyncio.wait_for(started.wait(), 10)
        assert len(store.refs("VM")) == len(vms) + 1
        assert store.get("task", task)["progress"] == 0.5
        await app.dispatcher.call("task.cancel", [session, task])
        assert store.get("task", task)["status"] == "cancelling"
        while store.get("task", task)["status"] == "cancelling":
            await asyncio.sleep(0.01)
        rec = store.record("task", task)
        assert rec["status"] == "cancelled"
        assert rec["error_info"] == ["TASK_CANCELLED", task]
        assert rec["allowed_operations"] == [] and rec["finished"] >= rec["created"]
        assert set(store.refs("VM")) == vms and set(store.refs("VBD")) == vbds
        assert store.get("VM", victim)["name_label"] == "original"
        assert store.record("VM", victim)["VBDs"] == []
        assert task not in app.tasks.running

    asyncio.run(scenario())


def test_cancel_before_the_job_first_runs(app):
    async def scenario():
        session = await boot(app)
        task = app.tasks.start_async(slow_route(app, asyncio.Event()), session, [app.store.refs("VM")[0], "x"])
        await app.dispatcher.call("task.cancel", [session, task])  # the job has not started yet
        for _ in range(100):
            await asyncio.sleep(0)
        assert app.store.get("task", task)["status"] == "cancelled"
        assert task not in app.tasks.running

    asyncio.run(scenario())


def test_finished_tasks_are_collected_after_their_lifetime(app, monkeypatch):
    async def scenario():
        session = await boot(app)
        done = await app.dispatcher.call("task.create", [session, "done", ""])
        await app.dispatcher.call("task.set_status", [session, done, "success"])
        pending = await app.dispatcher.call("task.create", [session, "pending", ""])
        app.tasks.collect()
        assert app.store.exists("task", done)  # not yet an hour old
        app.tasks.finished_at[done] = time.monotonic() - tasks_mod.FINISHED_TASK_LIFETIME - 1
        app.tasks.collect()
        assert not app.store.exists("task", done)
        assert app.store.exists("task", pending)

    asyncio.run(scenario())


def test_journal_stops_when_its_task_ends(app):
    """Background work an Async handler spawned inherits its context: once the task has
    ended, its writes are no longer journalled (nor kept in memory)."""
    async def scenario():
        session = await boot(app)
        background, journals = [], []

        async def handler(ctx, args):
            journals.append(store_journal.get())
            async def later():
                await asyncio.sleep(0.05)
                ctx.store.create("VM", {"name_label": "made later"})
            background.append(asyncio.get_running_loop().create_task(later()))
            return ctx.store.create("VM", {"name_label": "made by the task"})

        route = replace(app.dispatcher.routes["VM.clone"], handler=handler, is_coroutine=True)
        task = app.tasks.start_async(route, session, [app.store.refs("VM")[0], "x"])
        await app.tasks.running[task]
        await asyncio.gather(*background)
        assert app.store.find("VM", name_label="made later")
        [writes] = journals
        assert writes is not None and not writes.open
        assert [before for _, _, before in writes] == [None]  # only the task's own creation
        assert app.store.get("task", task)["status"] == "success"

    asyncio.run(scenario())
