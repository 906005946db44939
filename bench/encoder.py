"""The server-side cost of a VM.get_all_records reply, in process, against a baseline.

    python -m bench.encoder [--vms 10000] [--rounds 7] [--baseline REV]

Builds a state of N VMs with `bench.fixture`, loads it, then in interleaved rounds
times, for the current tree and for `pyxapi/api/generic.py` + `pyxapi/wire/xmlrpc.py`
as they are at git revision REV (default HEAD): building the records (the generic
get_all_records handler) and encoding the XML-RPC reply from them. Both must give the
same bytes. Nothing else runs in between, so on a shared machine the ratio is the
figure to read; best and median of the rounds are printed.
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import subprocess
import sys
import tempfile
import time
import types

from bench.common import PASSWORD, ROOT


def _module_at(rev: str, path: str, package: str) -> types.ModuleType:
    """A module of the package as it is at git revision `rev` (its relative imports are
    the current package's)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
                         capture_output=True, text=True, check=True).stdout
    mod = types.ModuleType(f"{package}._baseline_{path.rsplit('/', 1)[-1][:-3]}")
    mod.__package__ = package
    exec(compile(src, f"{rev}:{path}", "exec"), mod.__dict__)
    return mod


def run(n: int, rounds: int, baseline: str) -> dict:
    from bench import fixture
    from pyxapi.api import generic
    from pyxapi.server.app import App
    from pyxapi.wire import xmlrpc

    old_generic = _module_at(baseline, "pyxapi/api/generic.py", "pyxapi.api")
    old_xmlrpc = _module_at(baseline, "pyxapi/wire/xmlrpc.py", "pyxapi.wire")
    with tempfile.TemporaryDirectory(prefix="pyxapi-bench-enc-") as state:
        fixture.build(state, n)
        app = App(state)
        started = app.start(PASSWORD)
        if inspect.isawaitable(started):
            asyncio.run(started)
        store = app.store
        targets = {"baseline": (old_generic, old_xmlrpc), "current": (generic, xmlrpc)}
        replies = {name: enc.success(gen._all_records(store, "VM")) for name, (gen, enc) in targets.items()}
        if replies["baseline"] != replies["current"]:
            raise RuntimeError("the current encoder's reply differs from the baseline's")
        times: dict = {name: {"records_s": [], "encode_s": [], "total_s": []} for name in targets}

        async def measure():  # in an event loop, which turns after each reply as the server's does
            for _ in range(rounds):
                for name, (gen, enc) in targets.items():
                    t0 = time.perf_counter()
                    records = gen._all_records(store, "VM")
                    t1 = time.perf_counter()
                    enc.success(records)
                    t2 = time.perf_counter()
                    del records
                    await asyncio.sleep(0)
                    for key, v in (("records_s", t1 - t0), ("encode_s", t2 - t1), ("total_s", t2 - t0)):
                        times[name][key].append(v)

        asyncio.run(measure())
        app.close()
    result: dict = {"vms": n, "reply_bytes": len(replies["current"]), "baseline": baseline}
    for name, figures in times.items():
        result[name] = {k: {"best": round(min(v), 4), "median": round(statistics.median(v), 4)}
                        for k, v in figures.items()}
    result["ratio_current_vs_baseline"] = {
        k: round(min(times["current"][k]) / min(times["baseline"][k]), 3) for k in times["current"]}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vms", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--baseline", default="HEAD", help="git revision to compare with")
    a = ap.parse_args(argv)
    r = run(a.vms, a.rounds, a.baseline)
    print(f"VM.get_all_records reply, {r['vms']:,} VMs, {r['reply_bytes'] / 2**20:.1f} MiB, "
          f"{a.rounds} interleaved rounds (seconds, best / median)")
    for key in ("records_s", "encode_s", "total_s"):
        b, c = r["baseline"][key], r["current"][key]
        print(f"  {key[:-2]:8s} baseline {b['best']:.3f} / {b['median']:.3f}   "
              f"current {c['best']:.3f} / {c['median']:.3f}   "
              f"ratio {r['ratio_current_vs_baseline'][key]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
