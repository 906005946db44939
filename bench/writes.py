"""Durable writes: VM.set_name_label calls per second from several concurrent
clients, persistence on. Each value is distinct (the Lua script counts).

While the load runs, a separate client checks the promise: after every Success
reply of its own set_name_label, the new value is already in the SQLite file,
read through a separate connection (`durability_violations` must be 0).
"""
from __future__ import annotations

import pathlib
import sqlite3
import threading

import orjson

from bench import wrk
from bench.common import Client, start_pyxapi, xml_body
from bench.fixture import build

MARK = "@@N@@"


def _stored_name(db: sqlite3.Connection, ref: str) -> str | None:
    row = db.execute('SELECT data FROM "obj_VM" WHERE ref = ?', (ref,)).fetchone()
    return orjson.loads(row[0])["name_label"] if row else None


def _prober(port: int, db_path: pathlib.Path, vm: str, stop: threading.Event, out: dict) -> None:
    client = Client(port)
    session = client.login()
    db = sqlite3.connect(db_path)
    n = violations = 0
    while not stop.is_set():
        value = f"probe {n}"
        client.call("VM.set_name_label", session, vm, value)
        if _stored_name(db, vm) != value:
            violations += 1
        n += 1
    out.update(probes=n, durability_violations=violations)
    db.close()
    client.close()


def run(workdir: pathlib.Path, *, connections: int, duration: float, vms: int = 64) -> dict:
    wrk.ensure_wrk()
    state = workdir / "writes-state"
    build(str(state), vms)
    srv = start_pyxapi(state)
    try:
        client = Client(srv.port)
        session = client.login()
        refs = [r for r in client.call("VM.get_all", session)
                if client.call("VM.get_name_label", session, r).startswith("bench VM")]
        probe_vm, targets = refs[0], refs[1:]
        templates = []
        for ref in targets:
            head, tail = xml_body("VM.set_name_label", [session, ref, f"renamed {MARK}"]).split(MARK.encode())
            templates.append((head, tail))
        script = wrk.script_cycling(templates, "text/xml")
        url = f"http://127.0.0.1:{srv.port}/"
        if duration >= 4:
            wrk.run(url, script, connections, 1)  # warm-up
        stop = threading.Event()
        probe: dict = {}
        t = threading.Thread(target=_prober, args=(srv.port, state / "state.db", probe_vm, stop, probe))
        t.start()
        try:
            result = wrk.run(url, script, connections, duration)
        finally:
            stop.set()
            t.join()
        if result["errors"]:
            raise RuntimeError(f"write load had errors: {result}")
        # every write the load made is in memory and on disk alike
        db = sqlite3.connect(state / "state.db")
        mismatched = sum(1 for ref in targets
                         if _stored_name(db, ref) != client.call("VM.get_name_label", session, ref))
        db.close()
        client.close()
        result.update(probe, rows_differing_from_disk=mismatched, vms_written=len(targets),
                      settings={"connections": connections, "duration_s": duration})
        return result
    finally:
        srv.stop()
