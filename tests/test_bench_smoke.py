"""The benchmark suite still runs: `python -m bench --smoke` end to end, every figure
present in its JSON. No speed is asserted here (speed belongs to bench/, not tests)."""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

LOAD_FIGURES = ("requests", "rps", "p50_us", "p99_us", "errors", "rounds_rps")
THROUGHPUT = ("floor_xmlrpc", "stdlib_xmlrpc", "stdlib_keepalive_xmlrpc", "pyxapi_xmlrpc",
              "pyxapi_jsonrpc", "pyxapi_unix_xmlrpc", "loadgen_floor_tcp", "loadgen_pyxapi_tcp")
RATIOS = ("pyxapi_vs_floor", "pyxapi_vs_stdlib", "pyxapi_vs_stdlib_keepalive", "jsonrpc_vs_floor",
          "unix_vs_floor", "loadgen_headroom")
SCALE = ("first_start_s", "restart_s", "rss_after_start_kb", "rss_after_get_all_records_kb",
         "rss_after_calls_kb", "rss_peak_kb",
         "vms_in_store", "get_all_records_xmlrpc", "get_all_records_jsonrpc", "event_from_all")
WRITES = ("rps", "p50_us", "p99_us", "errors", "probes", "durability_violations",
          "rows_differing_from_disk", "vms_written")


@pytest.mark.timeout(600)
def test_bench_smoke_writes_every_figure(tmp_path):
    if shutil.which("wrk") is None:
        try:  # the bench installs wrk itself when it can (root + apt-get)
            sys.path.insert(0, str(ROOT))
            from bench.wrk import ensure_wrk
            ensure_wrk()
        except RuntimeError as e:
            pytest.skip(str(e))
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--sizes", "5,20", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "goals" in proc.stdout  # the table was printed
    r = json.loads(out.read_text())

    tp = r["throughput"]
    for name in THROUGHPUT:
        for key in LOAD_FIGURES:
            assert key in tp[name], (name, key)
        assert tp[name]["requests"] > 0 and tp[name]["errors"] == 0, (name, tp[name])
    for key in RATIOS:
        assert tp["ratios"][key] > 0, key

    assert set(r["scale"]) == {"5", "20"}
    for n, s in r["scale"].items():
        for key in SCALE:
            assert key in s, (n, key)
        assert s["vms_in_store"] >= int(n)
        for key in ("get_all_records_xmlrpc", "get_all_records_jsonrpc"):
            assert s[key]["best_s"] > 0 and s[key]["bytes"] > 0

    w = r["writes"]
    for key in WRITES:
        assert key in w, key
    assert w["requests"] > 0 and w["errors"] == 0
    assert w["durability_violations"] == 0 and w["rows_differing_from_disk"] == 0
    assert w["probes"] > 0

    assert "events" in r
    q = r["qemu"]   # a real guest's lifecycle, or why it was skipped (no QEMU here)
    if "skipped" not in q:
        assert q["accel"] in ("kvm", "tcg") and q["uptime_continued"] == q["rounds"] == 1
        for key in ("start_to_ready_s", "suspend_s", "resume_s", "clean_shutdown_s", "clone_s",
                    "clone_start_to_ready_s"):
            assert 0 < q[key]["min"] <= q[key]["median"] <= q[key]["max"], (key, q[key])
    assert [g["goal"] for g in r["goals"]] and all("met" in g for g in r["goals"])
