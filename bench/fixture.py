"""Pre-build a server state directory with N VMs, offline, with pyxapi's own classes.

Each VM gets 2 VDIs (on one SR), 2 VBDs, 1 VIF (on one network) and a VM_metrics
object, the way a real host's database holds them. Going through `App` and `Store`
keeps the rows exactly as the server writes them (defaults, uuids, relations).

    python -m bench.fixture STATE_DIR N
"""
from __future__ import annotations

import asyncio
import inspect
import sys
import time

from bench.common import PASSWORD

GiB = 2**30


def build(state_dir: str, n: int) -> dict:
    from pyxapi.db.store import now
    from pyxapi.server.app import App

    t0 = time.perf_counter()
    app = App(state_dir)
    started = app.start(PASSWORD)
    if inspect.isawaitable(started):  # App.start became a coroutine; accept both forms
        asyncio.run(started)
    store = app.store
    t = now()
    sr = store.create("SR", {"name_label": "bench SR", "type": "ext", "content_type": "user",
                             "physical_size": 1 << 50, "shared": False})
    net = store.create("network", {"name_label": "bench network", "bridge": "xenbr0", "MTU": 1500})
    for i in range(n):
        metrics = store.create("VM_metrics", {"memory_actual": GiB, "VCPUs_number": 1,
                                              "start_time": t, "install_time": t, "last_updated": t})
        vm = store.create("VM", {
            "name_label": f"bench VM {i}", "name_description": "created by the benchmark",
            "power_state": "Halted", "is_a_template": False, "metrics": metrics, "user_version": 1,
            "memory_static_min": GiB, "memory_static_max": GiB, "memory_dynamic_min": GiB,
            "memory_dynamic_max": GiB, "memory_target": GiB, "VCPUs_max": 1, "VCPUs_at_startup": 1,
            "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "cd"},
            "other_config": {"bench": "yes", "index": str(i)},
            "platform": {"acpi": "1", "apic": "true", "pae": "true", "viridian": "false"},
            "domain_type": "hvm", "allowed_operations": ["start", "clone", "copy", "destroy"],
        })
        for d in range(2):
            vdi = store.create("VDI", {"name_label": f"bench VM {i} disk {d}", "SR": sr,
                                       "virtual_size": 10 * GiB, "physical_utilisation": GiB,
                                       "type": "user", "location": f"bench-{i}-{d}"})
            store.create("VBD", {"VM": vm, "VDI": vdi, "userdevice": str(d), "device": f"xvd{'ab'[d]}",
                                 "bootable": d == 0, "mode": "RW", "type": "Disk"})
        store.create("VIF", {"VM": vm, "network": net, "device": "0", "MTU": 1500,
                             "MAC": "02:00:%02x:%02x:%02x:01" % (i >> 16 & 255, i >> 8 & 255, i & 255)})
    app.close()
    return {"vms": n, "build_s": round(time.perf_counter() - t0, 3)}


if __name__ == "__main__":
    print(build(sys.argv[1], int(sys.argv[2])), flush=True)
