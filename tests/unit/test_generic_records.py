"""get_all_records / get_all_records_where build many records with the cyclic garbage
collector paused (api/generic.py): it must be on again at the event loop's next turn, and
the records must be the store's."""
from __future__ import annotations

import asyncio
import gc

from pyxapi import model
from pyxapi.api import generic
from pyxapi.db.store import Store


def _store_with_vms(n: int) -> Store:
    store = Store(model.load())
    for i in range(n):
        store.create("VM", {"name_label": f"vm {i}"})
    return store


def test_collector_paused_for_one_loop_turn_only():
    store = _store_with_vms(3)
    seen = {}

    async def call():
        records = generic._all_records(store, "VM")
        seen["during"] = gc.isenabled()
        assert records == {ref: store.record("VM", ref) for ref in store.tables["VM"]}
        where = generic._records_where(store, "VM", 'field "name_label" = "vm 1"')
        assert [r["name_label"] for r in where.values()] == ["vm 1"]
        await asyncio.sleep(0)
        seen["after"] = gc.isenabled()

    assert gc.isenabled()
    asyncio.run(call())
    assert seen == {"during": False, "after": True}
    assert gc.isenabled()


def test_collector_left_off_when_it_was_off_and_on_without_a_loop():
    store = _store_with_vms(1)
    generic._all_records(store, "VM")  # no event loop: nothing to wait for
    assert gc.isenabled()
    gc.disable()
    try:
        async def call():
            generic._all_records(store, "VM")
            await asyncio.sleep(0)
            return gc.isenabled()

        assert asyncio.run(call()) is False  # someone else's pause is theirs to end
    finally:
        gc.enable()
