"""What a guest does by itself (halt, reboot, crash, agent reports) reaches the VM records:
the server's backend event sink, driven in-process through the simulator's test hooks."""
from __future__ import annotations

import asyncio

import pytest

from pyxapi.server.app import App

PASSWORD = "unit-pw"


async def _server(tmp_path):
    app = App(tmp_path, "simulator", {"use_env": False, "delays": {"guest_agent": 0.05}})
    await app.start(PASSWORD)
    await app.started()
    session = await app.dispatcher.call("session.login_with_password", ["root", PASSWORD])

    async def call(method, *args):
        return await app.dispatcher.call(method, [session, *args])
    return app, call


async def _running_vm(call, name):
    tmpl = next(r for r in await call("VM.get_by_name_label", "Debian Bookworm 12"))
    vm = await call("VM.clone", tmpl, name)
    await call("VM.provision", vm)
    await call("VM.start", vm, False, False)
    return vm


@pytest.mark.parametrize("reason, action, field, after", [
    ("halt", "destroy", "actions_after_shutdown", "Halted"),
    ("reboot", "restart", "actions_after_reboot", "Running"),
    ("reboot", "destroy", "actions_after_reboot", "Halted"),
    ("crash", "restart", "actions_after_crash", "Running"),
    ("crash", "preserve", "actions_after_crash", "Halted"),
])
def test_guest_stops_by_itself(tmp_path, reason, action, field, after):
    async def scenario():
        app, call = await _server(tmp_path)
        store = app.store
        vm = await _running_vm(call, "guest")
        store.update("VM", vm, {field: action})
        domid = store.get("VM", vm)["domid"]
        await app.backend.simulate_guest_stop(store.get("VM", vm)["uuid"], reason)
        row = store.get("VM", vm)
        assert row["power_state"] == after
        if after == "Running":
            assert row["domid"] not in (domid, -1) and row["resident_on"] == app.host_ref
        else:
            assert row["domid"] == -1 and row["resident_on"] == "OpaqueRef:NULL"
            assert vm not in store.field("host", app.host_ref, "resident_VMs")
            assert "start" in row["allowed_operations"]
        await app.backend.close()
        app.close()
    asyncio.run(scenario())


def test_guest_agent_report_arrives_later(tmp_path):
    async def scenario():
        app, call = await _server(tmp_path)
        store = app.store
        vm = await _running_vm(call, "agent")
        assert store.get("VM", vm)["guest_metrics"] == "OpaqueRef:NULL"
        assert "clean_shutdown" not in store.get("VM", vm)["allowed_operations"]  # HVM, no drivers yet
        for _ in range(100):
            await asyncio.sleep(0.01)
            if store.get("VM", vm)["guest_metrics"] != "OpaqueRef:NULL":
                break
        gm = store.get("VM_guest_metrics", store.get("VM", vm)["guest_metrics"])
        assert gm["os_version"]["distro"] == "debian" and gm["live"]
        assert "clean_shutdown" in store.get("VM", vm)["allowed_operations"]
        await call("VM.clean_shutdown", vm)
        assert not store.get("VM_guest_metrics", store.get("VM", vm)["guest_metrics"])["live"]
        await app.backend.close()
        app.close()
    asyncio.run(scenario())


def test_a_cancel_arriving_after_the_backend_acted_is_too_late():
    from pyxapi.api.vm import settle

    async def scenario():
        steps = []

        async def record_the_result():
            await asyncio.sleep(0.05)
            steps.append("recorded")
            return "done"

        async def operation():
            steps.append("backend acted")
            return await settle(record_the_result())

        job = asyncio.ensure_future(operation())
        await asyncio.sleep(0.01)
        job.cancel()
        assert await job == "done" and not job.cancelled()
        assert steps == ["backend acted", "recorded"]
    asyncio.run(scenario())
