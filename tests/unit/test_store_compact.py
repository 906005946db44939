"""Issue 6: rows loaded from SQLite are compact (equal values shared, empty maps and sets
shared), and sharing never lets one row's write show in another row."""
import asyncio
import datetime as dt
import logging

import pytest

from pyxapi.db import store as store_mod
from pyxapi.db.persist import SqlitePersistence
from pyxapi.db.store import EMPTY_MAP, EMPTY_SET, Store
from pyxapi.model import load as load_model


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture
def reopen(tmp_path, model):
    """Build a store with `fill`, then give the store a restart would load from it."""
    opened = []

    def go(fill):
        first = Store(model, SqlitePersistence(tmp_path / "state.db"))
        fill(first)
        first.commit()
        first.persistence.close()
        second = Store(model, SqlitePersistence(tmp_path / "state.db"))
        second.load()
        opened.append(second)
        return second

    yield go
    for s in opened:
        s.persistence.close()
    assert not EMPTY_MAP and not EMPTY_SET


def two_vms_one_disk_each(s):
    when = dt.datetime(2026, 11, 25, 22, 0, 0)
    for i in range(2):
        m = s.create("VM_metrics", {"memory_actual": 2**30, "start_time": when, "VCPUs_utilisation": {}})
        vm = s.create("VM", {"name_label": f"vm{i}", "name_description": "same text", "metrics": m,
                             "power_state": "Halted", "VCPUs_max": 1, "platform": {"acpi": "1"}})
        vdi = s.create("VDI", {"name_label": f"disk{i}", "virtual_size": 2**30})
        s.create("VBD", {"VM": vm, "VDI": vdi, "userdevice": "0", "mode": "RW", "bootable": True})


def test_loaded_rows_share_equal_values(reopen):
    s = reopen(two_vms_one_disk_each)
    vm0, vm1 = (s.get("VM", r) for r in s.refs("VM"))
    assert vm0["power_state"] is vm1["power_state"] == "Halted"
    assert vm0["name_description"] is vm1["name_description"] == "same text"
    # a ref held in a field is the very key of its table: no copy per row that points at it
    vbd = s.get("VBD", s.refs("VBD")[0])
    assert next(k for k in s.tables["VM"] if k == vbd["VM"]) is vbd["VM"]
    assert vm0["platform"]["acpi"] is vm1["platform"]["acpi"]
    # empty maps and sets are the shared empties; others are each row's own
    assert vm0["other_config"] is EMPTY_MAP and vm1["blocked_operations"] is EMPTY_MAP
    assert vm0["tags"] is EMPTY_SET
    assert vm0["platform"] is not vm1["platform"]
    m0, m1 = (s.get("VM_metrics", r) for r in s.refs("VM_metrics"))
    assert m0["start_time"] == dt.datetime(2026, 11, 25, 22, 0, 0) and m0["start_time"] is m1["start_time"]


def test_loaded_values_keep_their_types(reopen, model):
    # 1 == True == 1.0: sharing must not give an int field a bool, or a float field an int
    s = reopen(lambda s: s.create("VM", {"name_label": "typed", "VCPUs_max": 1, "is_a_template": True,
                                         "user_version": 1, "HVM_shadow_multiplier": 1.0}))
    row = s.get("VM", s.refs("VM")[0])
    fields = model.classes["VM"].fields
    python_type = {"int": int, "bool": bool, "float": float, "string": str, "datetime": dt.datetime}
    for name, value in row.items():
        t = getattr(fields[name].type, "name", None)
        if t in python_type:
            assert type(value) is python_type[t], name
    assert row["VCPUs_max"] == 1 and row["is_a_template"] is True and row["HVM_shadow_multiplier"] == 1.0


def test_a_write_to_one_row_leaves_the_others_alone(reopen):
    s = reopen(two_vms_one_disk_each)
    vm0, vm1 = s.refs("VM")
    s.update("VM", vm0, {"other_config": {"k": "v"}, "tags": ["t"]})
    assert s.get("VM", vm0)["other_config"] == {"k": "v"} and s.get("VM", vm0)["tags"] == ["t"]
    assert s.get("VM", vm1)["other_config"] == {} and s.get("VM", vm1)["tags"] == []
    assert not EMPTY_MAP and not EMPTY_SET


def test_an_in_place_edit_then_written_stays_in_its_row(reopen):
    s = reopen(two_vms_one_disk_each)
    vm0, vm1 = s.refs("VM")
    other = s.get("VM", vm0)["other_config"]
    other["k"] = "v"  # against the rule (values are replaced), but written: kept for vm0 only
    s.update("VM", vm0, {"other_config": other})
    assert s.get("VM", vm0)["other_config"] == {"k": "v"}
    assert s.get("VM", vm1)["other_config"] == {}
    assert s.get("VM", vm1)["other_config"] is EMPTY_MAP


def test_an_in_place_edit_never_written_is_dropped_at_commit(reopen, caplog):
    s = reopen(two_vms_one_disk_each)
    vm0, vm1 = s.refs("VM")
    s.get("VM", vm0)["tags"].append("stray")  # no write: not durable, no event, a bug
    s.update("VM", vm1, {"name_label": "renamed"})
    with caplog.at_level(logging.ERROR, logger="pyxapi.store"):
        s.commit()
    assert "edited in place" in caplog.text
    assert s.get("VM", vm0)["tags"] == [] and s.get("VM", vm1)["tags"] == []


def test_created_rows_share_empties_but_copy_the_rest(model):
    s = Store(model)
    given = {"name_label": "x", "other_config": {"a": "b"}, "tags": []}
    ref = s.create("VM", given)
    row = s.get("VM", ref)
    assert row["tags"] is EMPTY_SET and row["xenstore_data"] is EMPTY_MAP
    assert row["other_config"] == {"a": "b"} and row["other_config"] is not given["other_config"]


def test_many_records_built_schedule_one_trim(model, monkeypatch):
    trims = []
    monkeypatch.setattr(store_mod.memory, "trim", lambda: trims.append(1))
    monkeypatch.setattr(store_mod, "TRIM_AFTER_RECORDS", 5)
    s = Store(model)
    refs = [s.create("VM", {"name_label": str(i)}) for i in range(12)]

    async def big_reply():
        for r in refs:
            s.record("VM", r)
        for _ in range(3):  # the trim comes two loop turns on, and once only
            await asyncio.sleep(0)

    asyncio.run(big_reply())
    assert trims == [1]
