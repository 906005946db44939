"""First start: the host's skeleton — pool, host, host_metrics, host_cpus, dom0.

On later starts the existing objects are found again (by the pool's master).
Storage, networks and templates are added by the backend's inventory hooks.
"""
from __future__ import annotations

import datetime as _dt
import socket

from ..db.store import NULL, now

API_VERSION = (2, 21)
PRODUCT = {
    "product_brand": "XCP-ng",
    "product_version": "8.3.0",
    "product_version_text": "8.3",
    "product_version_text_short": "8.3",
    "platform_name": "XCP",
    "platform_version": "3.4.0",
    "build_number": "cloud",
    "xapi": "24.19",
    "xapi_build": "24.19.2",
    "xen": "4.17.5-pre",
    "linux": "4.19.0+1",
    "xencenter_min": "2.21",
    "xencenter_max": "2.21",
    "network_backend": "openvswitch",
    "db_schema": "5.786",
}
_DEFAULT_FACTS = {
    "cpu_count": 8,
    "socket_count": 1,
    "vendor": "GenuineIntel",
    "speed": "2394.374",
    "modelname": "Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz",
    "family": "6",
    "model": "85",
    "stepping": "7",
    "flags": "fpu de tsc msr pae mce cx8 apic sep mca cmov pat clflush acpi mmx fxsr sse sse2 ht"
             " syscall nx lm constant_tsc rep_good nopl nonstop_tsc cpuid pni pclmulqdq ssse3"
             " fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor",
    "memory_total": 64 * 2**30,
    "dom0_memory": 4 * 2**30,
    "dom0_vcpus": 4,
}


async def _facts(app) -> dict:
    facts = dict(_DEFAULT_FACTS)
    if app.backend is not None:
        facts.update({k: v for k, v in (await app.backend.host_info()).items() if v is not None})
    facts.setdefault("hostname", socket.gethostname())
    return facts


async def ensure_host(app) -> None:
    store = app.store
    pools = store.refs("pool")
    if pools:
        app.pool_ref = pools[0]
        app.host_ref = store.get("pool", app.pool_ref)["master"]
        return
    facts = await _facts(app)
    hostname = facts.get("hostname") or "pyxapi"
    t = now()
    metrics = store.create("host_metrics", {
        "memory_total": facts["memory_total"],
        "memory_free": facts["memory_total"] - facts["dom0_memory"],
        "live": True,
        "last_updated": t,
    })
    host = store.create("host", {
        "name_label": hostname,
        "name_description": "Default install",
        "hostname": hostname,
        "address": "127.0.0.1",
        "enabled": True,
        "API_version_major": API_VERSION[0],
        "API_version_minor": API_VERSION[1],
        "API_version_vendor": "XenSource",
        "software_version": {**PRODUCT, "hostname": hostname,
                             "date": _dt.date.today().isoformat()},
        "capabilities": ["xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_32p", "hvm-3.0-x86_64"],
        "sched_policy": "credit",
        "supported_bootloaders": ["pygrub", "eliloader"],
        "cpu_info": {
            "cpu_count": str(facts["cpu_count"]),
            "socket_count": str(facts["socket_count"]),
            "vendor": facts["vendor"],
            "speed": str(facts["speed"]),
            "modelname": facts["modelname"],
            "family": str(facts["family"]),
            "model": str(facts["model"]),
            "stepping": str(facts["stepping"]),
            "flags": facts["flags"],
        },
        "metrics": metrics,
        "memory_overhead": 0,
        "edition": "xcp-ng",
        "license_params": {"sku_type": "free", "restrict_pooling": "false"},
        "external_auth_type": "",
        "bios_strings": {"bios-vendor": "pyxapi", "system-manufacturer": "pyxapi"},
        "virtual_hardware_platform_versions": [0, 1, 2],
    })
    for i in range(int(facts["cpu_count"])):
        store.create("host_cpu", {
            "host": host, "number": i, "vendor": facts["vendor"], "speed": int(float(facts["speed"])),
            "modelname": facts["modelname"], "family": int(facts["family"]),
            "model": int(facts["model"]), "stepping": str(facts["stepping"]),
            "flags": facts["flags"], "utilisation": 0.0,
        })
    pool = store.create("pool", {"name_label": "", "master": host, "default_SR": NULL})
    dom0_metrics = store.create("VM_metrics", {
        "memory_actual": facts["dom0_memory"], "VCPUs_number": facts["dom0_vcpus"],
        "start_time": t, "install_time": t, "last_updated": t, "state": [],
    })
    dom0 = store.create("VM", {
        "name_label": f"Control domain on host: {hostname}",
        "name_description": "The domain which manages physical devices and manages other domains",
        "is_control_domain": True,
        "is_a_template": False,
        "power_state": "Running",
        "resident_on": host,
        "domid": 0,
        "memory_static_min": facts["dom0_memory"], "memory_static_max": facts["dom0_memory"],
        "memory_dynamic_min": facts["dom0_memory"], "memory_dynamic_max": facts["dom0_memory"],
        "memory_target": facts["dom0_memory"],
        "VCPUs_max": facts["dom0_vcpus"], "VCPUs_at_startup": facts["dom0_vcpus"],
        "metrics": dom0_metrics,
        "user_version": 1,
        "domain_type": "pv",
        "allowed_operations": [],
    })
    store.update("host", host, {"control_domain": dom0})
    app.pool_ref, app.host_ref = pool, host
    for hook in _first_start_hooks:
        await hook(app)


_first_start_hooks: list = []
_loop_start_hooks: list = []


def on_first_start(fn):
    """Register async fn(app), run once when a new host is created (storage, networks, templates)."""
    _first_start_hooks.append(fn)
    return fn


def on_loop_start_hook(fn):
    """Register async fn(app), run on every start inside the event loop."""
    _loop_start_hooks.append(fn)
    return fn


async def on_loop_start(app) -> None:
    for hook in _loop_start_hooks:
        await hook(app)
