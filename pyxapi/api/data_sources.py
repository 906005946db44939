"""Data sources (the live statistics xapi's RRD daemon keeps) of the host, VMs and SRs:
get_data_sources / record_data_source / query_data_source / forget_data_source_archives.

Values are read now, from the backend where it measures them (free memory, each domain's
vCPU load and memory) and from the server itself (its memory, open files, sessions, tasks).
Standard sources are always recorded; the others only after record_data_source, which is
remembered in the host's local database (api/host.py). An unknown or unrecorded source is an
error, as rrdd's Datasource_missing reaches xapi's clients.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ApiError
from . import host as _host, storage, vm as _vm
from .registry import action

KiB = 1024


@dataclass
class Source:
    name: str
    description: str
    units: str
    min: float
    max: float
    standard: bool
    value: float


def _missing(name: str) -> ApiError:
    return ApiError("INTERNAL_ERROR", f'Rrdd_error(Datasource_missing "{name}")')


def _recorded(ctx, uuid: str) -> set[str]:
    return set(_host.localdb(ctx.app).get("recorded_data_sources", {}).get(uuid, []))


def _set_recorded(ctx, uuid: str, names: set[str]) -> None:
    db = _host.localdb(ctx.app)
    table = dict(db.get("recorded_data_sources", {}))
    table[uuid] = sorted(names)
    db.put("recorded_data_sources", table)


# ---------------------------------------------------------------------------------------------
# what each kind of object measures
# ---------------------------------------------------------------------------------------------

async def _domains(ctx, store, host: str) -> list[dict]:
    """Live metrics of every guest domain on the host (the backend's figures)."""
    out = []
    for vm in _host.running_guests(store, host):
        try:
            out.append(await _vm.domain(ctx, vm, "metrics"))
        except ApiError:  # the domain went away meanwhile
            continue
    return out


def _rss_kib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


async def host_sources(ctx, host: str) -> list[Source]:
    store = ctx.store
    row = store.get("host", host)
    ncpu = max(1, int(row["cpu_info"].get("cpu_count", "1")))
    domains = await _domains(ctx, store, host)
    load = [0.004] * ncpu   # dom0's own background work
    for m in domains:
        for v, util in m.get("vcpus_utilisation", {}).items():
            pcpu = int(m.get("vcpus_cpu", {}).get(v, 0)) % ncpu
            load[pcpu] = min(1.0, load[pcpu] + float(util))
    metrics = _host._metrics(store, host)
    total = float(metrics["memory_total"]) if metrics else 0.0
    free = float(await _host.free_memory(ctx))
    out = [Source(f"cpu{i}", f"Physical cpu usage for cpu {i}", "(fraction)", 0.0, 1.0, True,
                  round(u, 4)) for i, u in enumerate(load)]
    out += [
        Source("cpu_avg", "Average physical cpu usage", "(fraction)", 0.0, 1.0, True,
               round(sum(load) / ncpu, 4)),
        Source("memory_total_kib", "Total amount of memory in the host", "KiB", 0.0,
               total / KiB, True, total / KiB),
        Source("memory_free_kib", "Total amount of free memory", "KiB", 0.0, total / KiB, True,
               free / KiB),
        Source("loadavg", "Domain0 loadavg", "", 0.0, float(ncpu * 4), True,
               round(sum(load) + 0.02, 2)),
        Source("xapi_memory_usage_kib", "Total memory allocated used by xapi daemon", "KiB",
               0.0, total / KiB, True, _rss_kib()),
        Source("xapi_open_fds", "Number of open file descriptors held by xapi", "", 0.0,
               65536.0, False, float(len(os.listdir("/proc/self/fd")))
               if os.path.isdir("/proc/self/fd") else 0.0),
        Source("pool_session_count", "Number of sessions", "", 0.0, 65536.0, False,
               float(len(store.refs("session")))),
        Source("pool_task_count", "Number of tasks", "", 0.0, 65536.0, False,
               float(len(store.refs("task")))),
    ]
    for pif in store.field("host", host, "PIFs"):
        prow = store.get("PIF", pif)
        if prow["physical"]:
            out += _nic_sources("pif", "physical", prow["device"])
    return out


def _nic_sources(prefix: str, kind: str, device: str) -> list[Source]:
    """A NIC's receive and send rates (a PIF's or a VIF's: 10 Gb/s at the most)."""
    return [Source(f"{prefix}_{device}_{way}",
                   f"Bytes per second {word} on {kind} interface {device}",
                   "B/s", 0.0, 1.25e9, True, 0.0)
            for way, word in (("rx", "received"), ("tx", "sent"))]


async def vm_sources(ctx, vm: str) -> list[Source]:
    store = ctx.store
    row = store.get("VM", vm)
    if row["power_state"] not in _vm.LIVE:
        return []
    metrics = row["metrics"]
    mrow = store.get("VM_metrics", metrics) if store.exists("VM_metrics", metrics) else {}
    if row["is_control_domain"]:  # dom0 is not a backend domain: its figures are the record's
        util = {str(i): 0.01 for i in range(max(1, row["VCPUs_at_startup"]))}
        actual = mrow.get("memory_actual") or row["memory_target"]
    else:
        m = await _vm.domain(ctx, vm, "metrics")
        util = m.get("vcpus_utilisation", {})
        actual = m.get("memory_actual", 0)
    out = [Source(f"cpu{v}", f"CPU{v} usage", "(fraction)", 0.0, 1.0, True, round(float(u), 4))
           for v, u in sorted(util.items(), key=lambda kv: int(kv[0]))]
    mean = sum(float(u) for u in util.values()) / max(1, len(util))
    static_max = float(row["memory_static_max"] or actual)
    out += [
        Source("memory", "Memory currently allocated to VM", "B", 0.0, static_max, True,
               float(actual)),
        Source("memory_target", "Target of VM balloon driver", "B", 0.0, static_max, True,
               float(row["memory_target"])),
        Source("runstate_fullrun", "Fraction of time that all VCPUs are running",
               "(fraction)", 0.0, 1.0, False, round(mean, 4)),
        Source("runstate_blocked", "Fraction of time that all VCPUs are blocked",
               "(fraction)", 0.0, 1.0, False, round(1.0 - mean, 4)),
    ]
    gm = _vm.guest_metrics(store, row)
    if gm is not None and gm["live"] and not row["is_control_domain"]:  # from the agent only
        report = await _vm.domain(ctx, vm, "guest_metrics") or {}
        free = report.get("memory", {}).get("free")
        # an agent that does not say (the simulated ones): an idle guest's share of its memory
        free_kib = float(free) if free is not None else float(actual // KiB * 45 // 100)
        out.append(Source("memory_internal_free", "Free memory as the guest agent reports it",
                          "KiB", 0.0, static_max / KiB, True, free_kib))
    for vbd in store.field("VM", vm, "VBDs"):
        b = store.get("VBD", vbd)
        if b["currently_attached"] and b["device"]:
            for way in ("read", "write"):
                out.append(Source(f"vbd_{b['device']}_{way}",
                                  f"{way.capitalize()}s to device {b['device']} in B/s",
                                  "B/s", 0.0, 4.0e9, True, 0.0))
    for vif in store.field("VM", vm, "VIFs"):
        v = store.get("VIF", vif)
        if v["currently_attached"]:
            out += _nic_sources("vif", "virtual", v["device"])
    return out


async def sr_sources(ctx, sr: str) -> list[Source]:
    if not storage.sr_attached(ctx.store, sr):
        return []
    names = (("io_throughput_read", "Data read from the SR", "MiB/s"),
             ("io_throughput_write", "Data written to the SR", "MiB/s"),
             ("io_throughput_total", "All SR I/O", "MiB/s"),
             ("iops_read", "Read requests per second", "requests/s"),
             ("iops_write", "Write requests per second", "requests/s"),
             ("iops_total", "I/O requests per second", "requests/s"),
             ("latency", "Average I/O latency", "milliseconds"),
             ("inflight", "Number of I/O requests currently in flight", "requests"))
    # the simulated disks do no I/O of their own when no guest writes
    return [Source(n, d, u, 0.0, 1.0e6, True, 0.0) for n, d, u in names]


# ---------------------------------------------------------------------------------------------
# the four messages, for each class
# ---------------------------------------------------------------------------------------------

def _record(s: Source, enabled: bool) -> dict:
    return {"name_label": s.name, "name_description": s.description, "enabled": enabled,
            "standard": s.standard, "units": s.units, "min": s.min, "max": s.max,
            "value": s.value if enabled else 0.0}


async def _find(ctx, sources, uuid: str, name: str, *, recorded_only: bool) -> Source:
    for s in sources:
        if s.name == name and (not recorded_only or s.standard or name in _recorded(ctx, uuid)):
            return s
    raise _missing(name)


def _check(ctx, cls: str, ref: str) -> None:
    if cls == "VM":
        _vm.assert_operation(ctx.store, ref, "data_source_op")


_SOURCES = {"host": host_sources, "VM": vm_sources, "SR": sr_sources}


def _register(cls: str):
    list_of = _SOURCES[cls]

    @action(f"{cls}.get_data_sources")
    async def get_data_sources(ctx, ref):
        recorded = _recorded(ctx, ctx.store.get(cls, ref)["uuid"])
        return [_record(s, s.standard or s.name in recorded) for s in await list_of(ctx, ref)]

    @action(f"{cls}.record_data_source")
    async def record_data_source(ctx, ref, data_source):
        _check(ctx, cls, ref)
        uuid = ctx.store.get(cls, ref)["uuid"]
        s = await _find(ctx, await list_of(ctx, ref), uuid, data_source, recorded_only=False)
        if not s.standard:
            _set_recorded(ctx, uuid, _recorded(ctx, uuid) | {s.name})

    @action(f"{cls}.query_data_source")
    async def query_data_source(ctx, ref, data_source):
        _check(ctx, cls, ref)
        uuid = ctx.store.get(cls, ref)["uuid"]
        s = await _find(ctx, await list_of(ctx, ref), uuid, data_source, recorded_only=True)
        return s.value

    @action(f"{cls}.forget_data_source_archives")
    async def forget_data_source_archives(ctx, ref, data_source):
        """Its history goes; a standard source is recorded again at once, another stops."""
        _check(ctx, cls, ref)
        uuid = ctx.store.get(cls, ref)["uuid"]
        await _find(ctx, await list_of(ctx, ref), uuid, data_source, recorded_only=False)
        recorded = _recorded(ctx, uuid)
        if data_source in recorded:
            _set_recorded(ctx, uuid, recorded - {data_source})


for _cls in _SOURCES:
    _register(_cls)
