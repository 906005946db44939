"""Long operations: run an `Async.*` call, show its task's progress, cancel it on Ctrl-C.

On a terminal the progress is a bar redrawn in place; otherwise one plain line each
time the whole percentage changes, so logs and pipes stay readable. Both go to stderr,
leaving stdout for the result (a uuid) that scripts capture.
"""
from __future__ import annotations

import sys
import time

from .connection import Failure, decode_value

POLL_SECONDS = 0.2
BAR_WIDTH = 30


class _Bar:
    def __init__(self, label: str, out):
        self.label, self.out, self.shown = label, out, None

    def update(self, fraction: float) -> None:
        pct = int(fraction * 100)
        if pct == self.shown:
            return
        self.shown = pct
        filled = int(fraction * BAR_WIDTH)
        self.out.write(f"\r{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {pct:3d}%")
        self.out.flush()

    def close(self) -> None:
        if self.shown is not None:
            self.out.write("\n")
            self.out.flush()
            self.shown = None


class _Lines(_Bar):
    def update(self, fraction: float) -> None:
        pct = int(fraction * 100)
        if pct != self.shown:
            self.shown = pct
            self.out.write(f"{self.label}: {pct}%\n")
            self.out.flush()

    def close(self) -> None:
        pass


def run_async(conn, method: str, *params, label: str | None = None, err=None):
    """Call `Async.<method>` and wait for its task; returns the decoded result or raises Failure."""
    task = conn.api(f"Async.{method}", *params)
    return wait(conn, task, label or method, err or sys.stderr)


def wait(conn, task: str, label: str, err):
    show = (_Bar if err.isatty() else _Lines)(label, err)
    cancelling = False
    try:
        while True:
            try:
                rec = conn.api("task.get_record", task)
                if rec["status"] not in ("pending", "cancelling"):
                    if rec["status"] == "success":
                        show.update(1.0)
                    break
                show.update(float(rec.get("progress") or 0.0))
                time.sleep(POLL_SECONDS)
            except KeyboardInterrupt:
                if cancelling:  # a second Ctrl-C: stop waiting, the task carries on
                    raise
                cancelling = True
                show.close()
                err.write(f"cancelling {label} (Ctrl-C again to stop waiting)\n")
                err.flush()
                conn.api("task.cancel", task)
    finally:
        show.close()
    try:
        conn.api("task.destroy", task)  # xe leaves no finished tasks behind
    except Failure:
        pass
    if rec["status"] == "success":
        return decode_value(rec.get("result") or "")
    raise Failure(rec.get("error_info") or ["TASK_CANCELLED" if rec["status"] == "cancelled" else "UNKNOWN_ERROR", task])
