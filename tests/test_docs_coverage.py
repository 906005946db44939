"""docs/coverage.md is generated from the model and the routes; it must never drift from the code."""
from __future__ import annotations

import difflib
import os
import subprocess
import sys

import pytest

from pyxapi.client.coverage import REGENERATE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate() -> str:
    p = subprocess.run([sys.executable, "-m", "pyxapi.cli", "docs", "coverage"], capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_coverage_table_is_up_to_date():
    fresh = generate()
    with open(os.path.join(ROOT, "docs", "coverage.md")) as f:
        checked_in = f.read()
    if fresh != checked_in:
        diff = "".join(list(difflib.unified_diff(checked_in.splitlines(True), fresh.splitlines(True),
                                                 "docs/coverage.md", "generated"))[:40])
        pytest.fail(f"docs/coverage.md is stale: regenerate it with `{REGENERATE}` "
                    f"(or `python -m pyxapi.client.coverage > docs/coverage.md`) and commit it\n{diff}")


def test_coverage_counts_follow_the_routes():
    from pyxapi.api.registry import load_all
    from pyxapi.model import load
    from pyxapi.server.dispatch import build_routes

    model = load()
    routes = build_routes(model)
    actions = load_all()
    text = generate()
    total = sum(1 for r in routes.values() if r.message.state != "Removed_s")
    hand = sum(1 for name, r in routes.items() if name in actions and r.message.state != "Removed_s")
    todo = sum(1 for r in routes.values() if not r.implemented and r.message.state != "Removed_s")
    all_row = next(line for line in text.splitlines() if line.startswith("| **all**"))
    cells = [c.strip(" *") for c in all_row.strip("|").split("|")]
    assert cells[1:5] == [str(total), str(hand), str(total - hand - todo), str(todo)]
    # a message the server answers NOT_IMPLEMENTED is listed under "not yet" for its class
    for name, r in routes.items():
        if not r.implemented and r.message.state != "Removed_s":
            cls, msg = name.split(".", 1)
            section = text.split(f"\n### {cls}\n", 1)[1].split("\n### ", 1)[0]
            assert f"`{msg}`" in section.split("- not yet:", 1)[1]
            break


def test_docs_command_usage():
    p = subprocess.run([sys.executable, "-m", "pyxapi.cli", "docs", "nonsense"], capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=60)
    assert p.returncode == 2 and REGENERATE in p.stderr
