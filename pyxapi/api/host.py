"""host.*: what the one host of this pool does (xapi's Xapi_host for a single-host pool).

The host's state lives in its record (enabled, allowed/current_operations, display, ssh, …);
what xapi keeps outside its database (its "local database": clock offset, scheduler
granularity, a pending reboot, recorded data sources) is in `localdb(app)`, a small JSON file
in the state directory.

Powering the host off or rebooting it is simulated: the management server stays up, the host
record goes not-live, and a reboot brings it back enabled a moment later.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as _dt
import gzip
import json
import logging
import os
import re
import signal
import urllib.parse
import zoneinfo

from ..db.store import NULL, journal, new_ref, now
from ..errors import ApiError
from .bootstrap import PRODUCT, on_loop_start, on_loop_start_hook
from .generic import begin_operation, end_operation, set_allowed_operations
from . import devices, vm as _vm
from .registry import action

log = logging.getLogger("pyxapi.host")

REBOOT_SECONDS = 1.0    # how long the simulated host takes to go down, and to boot again
AGENT_DELAY = 1.0       # xapi's toolstack restart/shutdown "fuse"
EDITIONS = ("xcp-ng",)  # XCP-ng's licensing daemon knows one edition


# ---------------------------------------------------------------------------------------------
# xapi's local database: host facts outside the API objects
# ---------------------------------------------------------------------------------------------

class LocalDb(dict):
    def __init__(self, path):
        self.path = path
        data = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                log.warning("unreadable %s: starting afresh", path)
        super().__init__(data)

    def put(self, key: str, value) -> None:
        self[key] = value
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self, sort_keys=True))
            os.replace(tmp, self.path)


def localdb(app) -> LocalDb:
    db = getattr(app, "_host_localdb", None)
    if db is None:
        db = LocalDb(app.state_dir / "host-local.json" if app.state_dir else None)
        app._host_localdb = db
    return db


def _ctx(app):
    from ..server.dispatch import Context
    return Context(app, None)


_background: set = set()  # the tasks _later started (kept referenced until they end)


def _later(app, delay: float, fn) -> None:
    """Run async fn(ctx) after `delay` s, outside any call: its writes are committed at once."""
    async def run():
        await asyncio.sleep(delay)
        journal.set(None)  # not part of the caller's undo journal
        try:
            await fn(_ctx(app))
        finally:
            app.store.commit()
    task = asyncio.get_running_loop().create_task(run())
    _background.add(task)
    task.add_done_callback(_background.discard)


def _metrics(store, host: str) -> dict | None:
    m = store.get("host", host)["metrics"]
    return store.get("host_metrics", m) if store.exists("host_metrics", m) else None


def _set_live(store, host: str, live: bool) -> None:
    m = store.get("host", host)["metrics"]
    if store.exists("host_metrics", m):
        store.update("host_metrics", m, {"live": live, "last_updated": now()})


def running_guests(store, host: str) -> list[str]:
    """VMs other than the control domain that have a domain on the host."""
    return [vm for vm in store.field("host", host, "resident_VMs")
            if not store.get("VM", vm)["is_control_domain"]]


# ---------------------------------------------------------------------------------------------
# allowed operations (xapi's Xapi_host_helpers.valid_operations)
# ---------------------------------------------------------------------------------------------

OPERATIONS = ("provision", "evacuate", "reboot", "shutdown", "vm_start", "vm_resume",
              "vm_migrate", "power_on", "apply_updates", "enable")
_CREATING = {"provision", "vm_resume", "vm_migrate"}
_REMOVING = {"evacuate", "reboot", "shutdown"}


def operation_errors(store, host: str) -> dict[str, tuple | None]:
    row = store.get("host", host)
    current = row["current_operations"]  # task -> operation
    errors: dict[str, tuple | None] = dict.fromkeys(OPERATIONS)

    def deny(ops, *err):
        for op in ops:
            if errors[op] is None:
                errors[op] = err

    def busy(running):  # xapi names the class, the object, the operation and its task
        task = next((t for t, o in current.items() if o == running), "")
        return ("OTHER_OPERATION_IN_PROGRESS", "host", host, running, task)

    if current:
        ops = set(current.values())
        first = next(iter(current.values()))
        for op in OPERATIONS:  # VMs arriving and VMs leaving do not mix
            if (op in _CREATING and _REMOVING & ops) or (op in _REMOVING and _CREATING & ops):
                deny([op], *busy(first))
        power = [op for op in ("reboot", "shutdown", "apply_updates") if op in ops]
        if power:  # none of these while another runs
            deny(["reboot", "shutdown", "apply_updates"], *busy(power[0]))
        if "provision" in ops:
            deny(["provision"], *busy("provision"))
    if row["enabled"]:
        deny(["reboot", "shutdown"], "HOST_NOT_DISABLED")
    metrics = _metrics(store, host)
    if metrics is None or metrics["live"]:
        deny(["power_on"], "HOST_IS_LIVE", host)
    if not row["power_on_mode"]:
        deny(["power_on"], "HOST_POWER_ON_MODE_DISABLED")
    return errors


def assert_operation(store, host: str, op: str) -> None:
    err = operation_errors(store, host)[op]
    if err is not None:
        raise ApiError(*err)


def update_allowed_operations(store, host: str) -> None:
    set_allowed_operations(store, "host", host,
                           [op for op, err in operation_errors(store, host).items() if err is None])


def _begin(ctx, host: str, op: str) -> str:
    """Check `op` and show it in current_operations until `_end` (which may come later,
    from a step scheduled after the call has answered)."""
    assert_operation(ctx.store, host, op)
    key = ctx.task or new_ref()
    begin_operation(ctx.store, "host", host, key, op, update_allowed_operations)
    return key


def _end(store, host: str, key: str) -> None:
    end_operation(store, "host", host, key, update_allowed_operations)


@on_loop_start_hook
async def host_started(app) -> None:
    """Every start of the agent: the host is live and enabled (xapi's consider_enabling_host:
    a host disabled with the default auto_enable comes back after a toolstack restart); a
    reboot that was under way has finished; operations whose tasks died with the agent are
    forgotten."""
    store, host = app.store, app.host_ref
    db = localdb(app)
    boot = db.get("disabled_until_reboot", False)
    changes = {"current_operations": {}, "enabled": True,
               "other_config": {**store.get("host", host)["other_config"],
                                "agent_start_time": f"{_dt.datetime.now().timestamp():.3f}"}}
    if boot:
        changes.update(_booted(app, host))
        db.put("disabled_until_reboot", False)
    info = await app.backend.host_info() if app.backend is not None else {}
    if not store.get("host", host)["memory_overhead"]:
        changes["memory_overhead"] = int(info.get("memory_overhead") or 0)
    if "boot_time" not in changes["other_config"]:  # clients compute the host's uptime from it
        booted = info.get("boot_time")
        changes["other_config"]["boot_time"] = (
            f"{booted.replace(tzinfo=_dt.UTC).timestamp():.0f}" if booted is not None
            else f"{_dt.datetime.now().timestamp():.0f}")
    store.update("host", host, changes)
    _set_live(store, host, True)
    update_allowed_operations(store, host)


def _booted(app, host: str) -> dict:
    """What a fresh boot changes in the host record: enabled again; display changes asked
    for "on reboot" take effect."""
    row = app.store.get("host", host)
    display = {"enable_on_reboot": "enabled", "disable_on_reboot": "disabled"}.get(
        row["display"], row["display"])
    return {"enabled": True, "display": display,
            "other_config": {**row["other_config"],
                             "boot_time": f"{_dt.datetime.now().timestamp():.0f}"}}


# ---------------------------------------------------------------------------------------------
# enable / disable, reboot / shutdown / power on, the agent
# ---------------------------------------------------------------------------------------------

@action("host.disable")
def disable(ctx, host, auto_enable=True):
    """No new VMs here until host.enable or a reboot.  auto_enable (xapi: default true; false
    keeps the host disabled across reboots) cannot be honoured: an omitted optional parameter
    reaches handlers as false, so the default behaviour is kept for everyone."""
    if ctx.store.get("host", host)["enabled"]:
        log.info("host %s disabled on request", host)
        ctx.store.update("host", host, {"enabled": False})
        update_allowed_operations(ctx.store, host)


@action("host.enable")
def enable(ctx, host):
    store = ctx.store
    if store.get("host", host)["enabled"]:
        return
    if localdb(ctx.app).get("disabled_until_reboot"):
        raise ApiError("HOST_DISABLED_UNTIL_REBOOT", host)
    store.update("host", host, {"enabled": True})
    update_allowed_operations(store, host)


def assert_bacon_mode(store, host: str) -> None:
    """xapi's maintenance check: disabled, no guests running, no disk plugged into dom0."""
    if store.get("host", host)["enabled"]:
        raise ApiError("HOST_NOT_DISABLED")
    for vm in running_guests(store, host):
        if store.get("VM", vm)["power_state"] == "Running":
            raise ApiError("HOST_IN_USE", host, "vm", vm)
    dom0 = store.get("host", host)["control_domain"]
    if store.exists("VM", dom0):
        for vbd in store.field("VM", dom0, "VBDs"):
            if store.get("VBD", vbd)["currently_attached"]:
                raise ApiError("HOST_IN_USE", host, "vbd", vbd)


async def _power_off(ctx, host: str, op: str) -> None:
    store = ctx.store
    assert_operation(store, host, op)
    assert_bacon_mode(store, host)
    localdb(ctx.app).put("disabled_until_reboot", True)  # no enable until it has booted
    key = _begin(ctx, host, op)

    async def down(ctx):
        store = ctx.store
        for vm in running_guests(store, host):  # paused guests die with the host
            await _vm.domain(ctx, vm, "destroy")
            _vm.force_state_reset(ctx, vm, "Halted")
        _set_live(store, host, False)
        _end(store, host, key)
        if op == "reboot":
            _later(ctx.app, REBOOT_SECONDS, lambda ctx: boot(ctx, host))

    _later(ctx.app, REBOOT_SECONDS, down)


async def boot(ctx, host: str) -> None:
    """The simulated host has booted: live and enabled again."""
    store = ctx.store
    store.update("host", host, _booted(ctx.app, host))
    localdb(ctx.app).put("disabled_until_reboot", False)
    _set_live(store, host, True)
    update_allowed_operations(store, host)
    devices.refresh_dom0_access(ctx)   # PCI hiding asked "on reboot" took effect


@action("host.reboot")
async def reboot(ctx, host):
    await _power_off(ctx, host, "reboot")


@action("host.shutdown")
async def shutdown(ctx, host):
    await _power_off(ctx, host, "shutdown")


@action("host.power_on")
async def power_on(ctx, host):
    """Wake a host that was shut down, with its power_on_mode (wake-on-LAN, iLO, IPMI…)."""
    key = _begin(ctx, host, "power_on")
    try:
        await asyncio.sleep(REBOOT_SECONDS)
        await boot(ctx, host)
    finally:
        _end(ctx.store, host, key)


@action("host.set_power_on_mode")
def set_power_on_mode(ctx, self, power_on_mode, power_on_config):
    """How the host is woken (power_on needs one): "" (none), "wake-on-lan", "iLO", "DRAC",
    "IPMI" or a custom plugin's name."""
    ctx.store.update("host", self, {"power_on_mode": power_on_mode,
                                    "power_on_config": power_on_config})
    update_allowed_operations(ctx.store, self)


@action("host.declare_dead")
def declare_dead(ctx, host):
    # the only host is the one answering: it is alive by definition
    raise ApiError("HOST_IS_LIVE", host)


@action("host.restart_agent")
def restart_agent(ctx, host):
    """As xe-toolstack-restart: operations in progress are aborted, the agent starts again
    (recovering its domains and storage); the API stays reachable and sessions survive."""
    async def restart(ctx):
        app = ctx.app
        for job in list(app.tasks.running.values()):
            job.cancel()
        await on_loop_start(app)
        log.info("agent restarted")
    _later(ctx.app, AGENT_DELAY, restart)


@action("host.shutdown_agent")
def shutdown_agent(ctx):
    """The agent stops for good after a short pause (the caller gets its answer first)."""
    async def stop(ctx):
        log.warning("host.shutdown_agent: the agent stops now")
        os.kill(os.getpid(), signal.SIGTERM)  # the server's own clean stop
    _later(ctx.app, AGENT_DELAY, stop)


# ---------------------------------------------------------------------------------------------
# evacuation: with one host there is nowhere to move a VM
# ---------------------------------------------------------------------------------------------

def _evacuation_plan(store, host: str) -> dict[str, list[str]]:
    """VM -> [code, params…] for each VM that cannot leave (xapi's plan without WLB): in a
    pool of one host no other host can take any."""
    return {vm: ["NO_HOSTS_AVAILABLE", vm] for vm in running_guests(store, host)}


@action("host.get_vms_which_prevent_evacuation")
def get_vms_which_prevent_evacuation(ctx, self):
    return _evacuation_plan(ctx.store, self)


@action("host.assert_can_evacuate")
def assert_can_evacuate(ctx, host):
    plan = _evacuation_plan(ctx.store, host)
    if plan:
        raise ApiError("CANNOT_EVACUATE_HOST", "|".join(",".join(e) for e in plan.values()))


@action("host.evacuate")
def evacuate(ctx, host, network=NULL, evacuate_batch_size=0):
    key = _begin(ctx, host, "evacuate")
    try:
        plan = _evacuation_plan(ctx.store, host)
        if plan:
            raise ApiError(*next(iter(plan.values())))
    finally:
        _end(ctx.store, host, key)


@action("host.migrate_receive")
def migrate_receive(ctx, host, network, options):
    """Where a VM.migrate_send should send the VM: this host's address on `network`."""
    store = ctx.store
    pifs = [p for p in store.field("network", network, "PIFs") if store.get("PIF", p)["host"] == host]
    if not pifs:
        raise ApiError("HOST_CANNOT_ATTACH_NETWORK", host, network)
    row = store.get("PIF", pifs[0])
    ip = row["IP"] if row["primary_address_type"] == "IPv4" else next(
        (a.split("/")[0] for a in row["IPv6"] if not a.lower().startswith("fe80")), "")
    if not ip:
        raise ApiError("INTERFACE_HAS_NO_IP", pifs[0])
    ip = f"[{ip}]" if ":" in ip else ip
    master = store.get("host", store.get("pool", ctx.app.pool_ref)["master"])["address"]
    # xapi logs a new session in for the receiver; a single host can take the caller's own
    return {"SM": f"http://{ip}/services/SM?session_id={ctx.session}",
            "xenops": f"http://{ip}/services/xenops?session_id={ctx.session}",
            "host": host, "session_id": ctx.session, "master": f"http://{master}/"}


@action("host.get_uncooperative_resident_VMs")
def get_uncooperative_resident_vms(ctx, self):
    return []  # xapi answers this deprecated call with an empty set


@action("host.retrieve_wlb_evacuate_recommendations")
def retrieve_wlb_evacuate_recommendations(ctx, self):
    raise ApiError("WLB_NOT_INITIALIZED")


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------

async def free_memory(ctx) -> int:
    """Bytes free for new domains now (the hypervisor's figure)."""
    if ctx.backend is not None:
        return int(await ctx.backend.host_free_memory())
    metrics = _metrics(ctx.store, ctx.app.host_ref)
    return int(metrics["memory_total"]) if metrics else 0


@action("host.compute_free_memory")
async def compute_free_memory(ctx, host):
    """Free memory with every running VM squeezed to its dynamic minimum (xapi's "maximum
    compression"): what is free now plus what ballooning could take back."""
    store = ctx.store
    free = await free_memory(ctx)
    for vm in running_guests(store, host):
        row = store.get("VM", vm)
        metrics = row["metrics"]
        actual = (store.get("VM_metrics", metrics)["memory_actual"]
                  if store.exists("VM_metrics", metrics) else row["memory_target"])
        free += max(0, actual - row["memory_dynamic_min"])
    return free


@action("host.compute_memory_overhead")
def compute_memory_overhead(ctx, host):
    return ctx.store.get("host", host)["memory_overhead"]


# ---------------------------------------------------------------------------------------------
# clock and time zones
# ---------------------------------------------------------------------------------------------

def server_time(app) -> _dt.datetime:
    """The host's clock (UTC, naive): the real one moved by what set_servertime asked."""
    t = _dt.datetime.now(_dt.UTC).replace(tzinfo=None, microsecond=0)
    return t + _dt.timedelta(seconds=localdb(app).get("clock_offset", 0))


@action("host.get_servertime")
def get_servertime(ctx, host):
    return server_time(ctx.app)


@action("host.get_server_localtime")
def get_server_localtime(ctx, host):
    utc = server_time(ctx.app).replace(tzinfo=_dt.UTC)
    tz = ctx.store.get("host", host)["timezone"]
    try:
        local = utc.astimezone(zoneinfo.ZoneInfo(tz)) if tz else utc.astimezone()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        local = utc.astimezone()
    return local.replace(tzinfo=None)


@action("host.list_timezones")
def list_timezones(ctx, self):
    return sorted(zoneinfo.available_timezones())


@action("host.set_servertime")
def set_servertime(ctx, self, value):
    if ctx.store.get("host", self)["ntp_mode"] != "Disabled":
        raise ApiError("NOT_ALLOWED_WHEN_NTP_IS_ENABLED", self)
    real = _dt.datetime.now(_dt.UTC).replace(tzinfo=None, microsecond=0)
    localdb(ctx.app).put("clock_offset", int((value - real).total_seconds()))


FACTORY_NTP = ("0.xcp-ng.pool.ntp.org", "1.xcp-ng.pool.ntp.org", "2.xcp-ng.pool.ntp.org",
               "3.xcp-ng.pool.ntp.org")


def _ntp_servers(store, host: str) -> list[str]:
    row = store.get("host", host)
    return {"Disabled": [], "Custom": list(row["ntp_custom_servers"]),
            "DHCP": [store.get("PIF", p)["gateway"] for p in store.field("host", host, "PIFs")
                     if store.get("PIF", p)["management"] and store.get("PIF", p)["gateway"]],
            }.get(row["ntp_mode"], list(FACTORY_NTP))


@action("host.get_ntp_servers_status")
def get_ntp_servers_status(ctx, self):
    servers = _ntp_servers(ctx.store, self)
    # chrony's view: it follows the first source and combines the others
    return {s: "Synchronized" if i == 0 else "Combined" for i, s in enumerate(servers)}


@action("host.get_ntp_synchronized")
def get_ntp_synchronized(ctx, self):
    return bool(_ntp_servers(ctx.store, self))


# ---------------------------------------------------------------------------------------------
# logs and diagnostics
# ---------------------------------------------------------------------------------------------

@action("host.get_log")
def get_log(ctx, host):
    raise ApiError("NOT_IMPLEMENTED", "get_log")  # as xapi: the log is had via bugreport


@action("host.dmesg_clear")
def dmesg_clear(ctx, host):
    raise ApiError("NOT_IMPLEMENTED", "dmesg_clear")  # as xapi


@action("host.list_methods")
def list_methods(ctx):
    raise ApiError("NOT_IMPLEMENTED", "list_method")  # as xapi (system.listMethods lists them)


def _xen_console(ctx, host: str) -> list[str]:
    """Xen's console ring: its boot messages, then what was asked of it since."""
    row = ctx.store.get("host", host)
    cpu = row["cpu_info"]
    metrics = _metrics(ctx.store, host)
    total_mib = (metrics["memory_total"] if metrics else 0) // 2**20
    xen = row["software_version"].get("xen", PRODUCT["xen"])
    lines = [
        f" Xen version {xen} (mockbuild@xcp-ng.org) (gcc (GCC) 11.2.1) debug=n",
        " Latest ChangeSet: ",
        " build-id: 4c2f0e4d9a6b8e3f1d7c5a9b0e2d4f6a8c1b3e5d",
        " Bootloader: GRUB 2.06",
        f" Command line: dom0_mem={row['memory_overhead'] // 2**20 or 1024}M,max:8192M"
        " watchdog ucode=scan dom0_max_vcpus=1-16 crashkernel=256M,below=4G console=vga"
        " vga=mode-0x0311",
        " Xen image load base address: 0",
        " Video information:",
        "  VGA is graphics mode 1024x768, 32 bpp",
        " Disc information:",
        "  Found 1 MBR signatures",
        "  Found 1 EDD information structures",
        f" System RAM: {total_mib}MB ({total_mib * 1024}kB)",
        " ACPI: RSDP 000F0520, 0024 (r2 ALASKA)",
        " Domain heap initialised DMA width 32 bits",
        f" CPU Vendor: {cpu.get('vendor', '')}, Family {cpu.get('family', '')},"
        f" Model {cpu.get('model', '')}, Stepping {cpu.get('stepping', '')}",
        f" Brought up {cpu.get('cpu_count', '1')} CPUs",
        f" Scheduling granularity: {localdb(ctx.app).get('sched_gran', 'cpu')},"
        " 1 CPU per sched-resource",
        " HVM: ASIDs enabled.",
        " HVM: Hardware Assisted Paging (HAP) detected",
        " Dom0 has maximum 16 VCPUs",
        " Initial low memory virq threshold set at 0x4000 pages.",
        " Scrubbing Free RAM in background",
        " Std. Loglevel: Errors and warnings",
        " Guest Loglevel: Nothing (Rate-limited: Errors and warnings)",
        " *** Serial input to DOM0 (type 'CTRL-a' three times to switch input)",
        " Freed 644kB init memory",
    ]
    lines += localdb(ctx.app).get("debug_keys", [])
    return ["(XEN)" + line for line in lines]


@action("host.dmesg")
def dmesg(ctx, host):
    return "\n".join(_xen_console(ctx, host)) + "\n"


_DEBUG_KEYS = {
    "0": "'0' pressed -> dumping Dom0's registers",
    "a": "'a' pressed -> dumping timer queues",
    "c": "'c' pressed -> dumping ACPI Cx structures",
    "d": "'d' pressed -> dumping registers",
    "e": "'e' pressed -> dumping event-channel info",
    "g": "'g' pressed -> print grant table usage",
    "h": "'h' pressed -> showing installed handlers",
    "i": "'i' pressed -> dumping interrupt bindings",
    "m": "'m' pressed -> memory info",
    "q": "'q' pressed -> dumping domain info (now = 0x1A:2B3C4D5E)",
    "r": "'r' pressed -> dumping run queues",
    "s": "'s' pressed -> dumping softtsc stats",
    "t": "'t' pressed -> dumping time stats",
    "u": "'u' pressed -> dumping NUMA info (now = 0x1A:2B3C4D5E)",
    "v": "'v' pressed -> dumping VMCS / VMCB",
    "z": "'z' pressed -> dumping IOAPIC info",
}


@action("host.send_debug_keys")
def send_debug_keys(ctx, host, keys):
    """Each key makes Xen write a line to its console ring (read back by host.dmesg)."""
    db = localdb(ctx.app)
    said = [" " + _DEBUG_KEYS.get(k, f"'{k}' pressed -> unknown keyhandler") for k in keys
            if not k.isspace()]
    db.put("debug_keys", (db.get("debug_keys", []) + said)[-200:])


# xen-bugtool --capabilities: key, pii, size and time bounds, content type, checked by default
_CAPABILITIES = (
    ("blobs", "yes", "application/data", "yes"), ("boot-loader", "no", "text/plain", "yes"),
    ("disk-info", "maybe", "text/plain", "yes"), ("firstboot", "yes", "text/plain", "yes"),
    ("hardware-info", "maybe", "text/plain", "yes"),
    ("high-availability", "maybe", "text/plain", "yes"),
    ("host-crashdump-logs", "no", "text/plain", "no"), ("kernel-info", "maybe", "text/plain", "yes"),
    ("loopback-devices", "maybe", "text/plain", "yes"), ("multipath", "maybe", "text/plain", "yes"),
    ("network-config", "customized", "text/plain", "yes"),
    ("network-status", "yes", "text/plain", "yes"),
    ("persistent-stats", "maybe", "application/data", "yes"),
    ("process-list", "yes", "text/plain", "yes"), ("system-logs", "maybe", "text/plain", "yes"),
    ("system-services", "no", "text/plain", "yes"), ("tapdisk-logs", "no", "text/plain", "no"),
    ("vncterm", "maybe", "text/plain", "no"), ("xapi-debug", "maybe", "text/plain", "no"),
    ("xen-info", "maybe", "text/plain", "yes"), ("xenserver-config", "maybe", "text/plain", "yes"),
    ("xenserver-databases", "yes", "text/plain", "yes"),
    ("xenserver-install", "maybe", "text/plain", "yes"),
    ("xenserver-logs", "maybe", "text/plain", "yes"), ("xha-liveset", "maybe", "text/plain", "yes"),
    ("yum", "no", "text/plain", "yes"),
)


@action("host.get_system_status_capabilities")
def get_system_status_capabilities(ctx, host):
    caps = "".join(
        f'<capability content-type="{ctype}" default-checked="{checked}" key="{key}"'
        f' max-size="{-1 if ctype == "application/data" else 65536 * 16}" max-time="-1"'
        f' min-size="-1" min-time="-1" pii="{pii}" />'
        for key, pii, ctype, checked in _CAPABILITIES)
    return f'<?xml version="1.0" ?><system-status-capabilities>{caps}</system-status-capabilities>'


def _status_report(ctx, host: str) -> bytes:
    """What bugreport_upload sends: the host's record, its console ring, and the server log."""
    store = ctx.store
    parts = [json.dumps({"host": store.record("host", host)}, default=str, indent=1),
             "\n".join(_xen_console(ctx, host))]
    if ctx.app.state_dir and (ctx.app.state_dir / "server.log").exists():
        parts.append((ctx.app.state_dir / "server.log").read_text(errors="replace")[-1_000_000:])
    return gzip.compress("\n\n".join(parts).encode())


@action("host.bugreport_upload")
async def bugreport_upload(ctx, host, url, options):
    """Upload a status report with an HTTP PUT (as host-bugreport-upload does with curl -T)."""
    name = f"{ctx.store.get('host', host)['hostname']}-{now():%Y%m%d%H%M%S}.tar.gz"
    await upload(url, options, name, lambda: _status_report(ctx, host))


async def upload(url: str, options: dict, name: str, content) -> None:
    """PUT content() to url (url/name when it ends with "/"), as xapi's upload scripts do with
    curl; failures are reported in xapi's words for curl's exit codes."""
    import httpx

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ApiError("INTERNAL_ERROR", "URL not recognised")
    proxy = options.get("http_proxy") or None
    target = url if not url.endswith("/") else url + name
    try:
        async with httpx.AsyncClient(proxy=proxy, timeout=30, verify=False) as client:
            r = await client.put(target, content=content())
    except httpx.ProxyError:
        raise ApiError("INTERNAL_ERROR", "Failed to resolve proxy or host") from None
    except httpx.ConnectError as e:
        resolved = "Name or service not known" not in str(e) and "nodename" not in str(e)
        raise ApiError("INTERNAL_ERROR", "Failed to connect to host" if resolved
                       else "Failed to resolve proxy or host") from None
    except httpx.HTTPError as e:
        raise ApiError("INTERNAL_ERROR", f"upload failed: {e}") from None
    if r.status_code >= 400:
        raise ApiError("INTERNAL_ERROR", f"upload refused: HTTP {r.status_code}")


@action("host.sync_data", "host.backup_rrds", "host.refresh_pack_info")
def nothing_to_do(ctx, host, *rest):
    """Successful no-ops on a single host: there is no master to sync messages or RRDs with
    (the recorded data sources are already kept on disk), and no supplemental pack can be
    added to it, so there is nothing new to find (host.rescan_drivers: drivers.py)."""


@action("host.syslog_reconfigure")
def syslog_reconfigure(ctx, host):
    """Apply host.logging: where syslog sends the host's messages."""
    dest = ctx.store.get("host", host)["logging"].get("syslog_destination", "")
    log.info("syslog: %s", f"remote {dest}" if dest else "local only")


@action("host.get_tracked_user_agents")
def get_tracked_user_agents(ctx, self):
    """The clients that logged in since the agent started (name -> version)."""
    store = ctx.store
    started = float(store.get("host", self)["other_config"].get("agent_start_time", 0))
    agents = {}
    for s in store.refs("session"):
        row = store.get("session", s)
        origin = row["originator"]
        if origin and row["last_active"].replace(tzinfo=_dt.UTC).timestamp() >= started - 1:
            name, _, version = origin.partition("/")
            agents[name] = version
    return agents


# ---------------------------------------------------------------------------------------------
# names, management interface, display, ssh, scheduler
# ---------------------------------------------------------------------------------------------

_HOSTNAME = re.compile(r"[A-Za-z0-9.-]+")


@action("host.set_hostname_live")
def set_hostname_live(ctx, host, hostname):
    store = ctx.store
    row = store.get("host", host)
    if row["external_auth_type"] == "AD":  # winbind's machine account is tied to the name
        raise ApiError("AUTH_ALREADY_ENABLED", row["external_auth_type"],
                       row["external_auth_service_name"])
    if not hostname:
        raise ApiError("HOST_NAME_INVALID", "hostname empty")
    if len(hostname) > 255:
        raise ApiError("HOST_NAME_INVALID", "hostname is too long")
    if not _HOSTNAME.fullmatch(hostname) or hostname[0] == "-" or hostname[-1] == "-":
        raise ApiError("HOST_NAME_INVALID", "hostname contains invalid characters")
    old = row["hostname"]
    store.update("host", host, {"hostname": hostname, "software_version": {
        **row["software_version"], "hostname": hostname}})
    dom0 = row["control_domain"]
    if store.exists("VM", dom0) and store.get("VM", dom0)["name_label"] in (
            f"Control domain on host: {old}", ""):
        store.update("VM", dom0, {"name_label": f"Control domain on host: {hostname}"})


def management_pif(store, host: str) -> str | None:
    pifs = [p for p in store.field("host", host, "PIFs") if store.get("PIF", p)["management"]]
    return pifs[0] if pifs else None


@action("host.get_management_interface")
def get_management_interface(ctx, host):
    pif = management_pif(ctx.store, host)
    if pif is None:
        raise ApiError("INTERNAL_ERROR", "Not_found")
    return pif


def _assert_no_ha(store) -> None:
    for pool in store.refs("pool"):
        if store.get("pool", pool)["ha_enabled"]:
            raise ApiError("HA_IS_ENABLED")


@action("host.management_reconfigure")
def management_reconfigure(ctx, pif):
    store = ctx.store
    _assert_no_ha(store)
    row = store.get("PIF", pif)
    host = row["host"]
    if row["managed"]:
        net = row["network"]
        if store.exists("network", net) and not store.get("network", net)["managed"]:
            raise ApiError("NETWORK_UNMANAGED", net)
        if row["primary_address_type"] == "IPv6":
            if row["ipv6_configuration_mode"] == "None":
                raise ApiError("PIF_HAS_NO_V6_NETWORK_CONFIGURATION", pif)
        elif row["ip_configuration_mode"] == "None":
            raise ApiError("PIF_HAS_NO_NETWORK_CONFIGURATION", pif)
        if row["bond_slave_of"] != NULL:
            raise ApiError("CANNOT_PLUG_BOND_SLAVE", pif)
        current = management_pif(store, host)
        if current is not None and store.get("PIF", current)["primary_address_type"] != \
                row["primary_address_type"]:
            raise ApiError("PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE", pif)
    if row["management"]:
        return
    for other in store.field("host", host, "PIFs"):
        if other != pif and store.get("PIF", other)["management"]:
            store.update("PIF", other, {"management": False})
    store.update("PIF", pif, {"management": True, "currently_attached": True})
    address = row["IP"] if row["primary_address_type"] == "IPv4" else next(
        iter(a.split("/")[0] for a in row["IPv6"]), "")
    if address:
        store.update("host", host, {"address": address})


@action("host.management_disable")
def management_disable(ctx):
    store = ctx.store
    _assert_no_ha(store)
    for pif in store.field("host", ctx.app.host_ref, "PIFs"):
        if store.get("PIF", pif)["management"]:
            store.update("PIF", pif, {"management": False})


@action("host.local_management_reconfigure")
def local_management_reconfigure(ctx, interface):
    raise ApiError("NOT_IN_EMERGENCY_MODE")  # only for a pool member cut off from its master


_DISPLAY = {  # (current, asked) -> new
    ("enabled", "disable"): "disable_on_reboot", ("enable_on_reboot", "disable"): "disabled",
    ("disabled", "enable"): "enable_on_reboot", ("disable_on_reboot", "enable"): "enabled",
}


def _display(ctx, host: str, asked: str) -> str:
    current = ctx.store.get("host", host)["display"]
    new = _DISPLAY.get((current, asked), current)
    if new != current:
        ctx.store.update("host", host, {"display": new})
    return new


@action("host.enable_display")
def enable_display(ctx, host):
    return _display(ctx, host, "enable")


@action("host.disable_display")
def disable_display(ctx, host):
    return _display(ctx, host, "disable")


@action("host.enable_ssh")
def enable_ssh(ctx, self):
    row = ctx.store.get("host", self)
    timeout = row["ssh_enabled_timeout"]
    changes = {"ssh_enabled": True}
    if timeout > 0:
        changes["ssh_expiry"] = now() + _dt.timedelta(seconds=timeout)
    ctx.store.update("host", self, changes)


@action("host.disable_ssh")
def disable_ssh(ctx, self):
    ctx.store.update("host", self, {"ssh_enabled": False})


@action("host.get_sched_gran")
def get_sched_gran(ctx, self):
    return localdb(ctx.app).get("sched_gran", "cpu")


@action("host.set_sched_gran")
def set_sched_gran(ctx, self, value):
    """Xen's command line for the next boot (as xen-cmdline --set-xen sched-gran=…)."""
    localdb(ctx.app).put("sched_gran", value)


# ---------------------------------------------------------------------------------------------
# licensing (XCP-ng's licensing daemon: one free edition, no license files)
# ---------------------------------------------------------------------------------------------

@action("host.apply_edition")
def apply_edition(ctx, host, edition, force=False):
    store = ctx.store
    _assert_no_ha(store)
    editions = store.get("host", host)["editions"] or list(EDITIONS)
    if edition not in editions:
        raise ApiError("INVALID_EDITION", edition)
    if store.get("host", host)["edition"] != edition:
        store.update("host", host, {"edition": edition})


@action("host.license_add")
def license_add(ctx, host, contents):
    try:
        base64.b64decode(contents, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("LICENSE_PROCESSING_ERROR") from None
    # decoded, but XCP-ng's licensing daemon has no use for a license file
    raise ApiError("LICENSE_PROCESSING_ERROR")


@action("host.license_remove")
def license_remove(ctx, host):
    """Back to the unlicensed edition, which on XCP-ng is the only one."""
    apply_edition(ctx, host, EDITIONS[0])


# ---------------------------------------------------------------------------------------------
# plugins and extensions
# ---------------------------------------------------------------------------------------------

def _hyperthreading(ctx, host, args):
    return "true" if int(ctx.store.get("host", host)["cpu_info"].get("threads_per_core", "1")) > 1 \
        else "false"


def _smart_health(ctx, host, args):
    return json.dumps({"/dev/nvme0": "PASSED"})


def _smart_information(ctx, host, args):
    return json.dumps({"/dev/nvme0": {
        "model_name": "SAMSUNG MZQL2960HCJR-00A07", "serial_number": "S64FNE0R812345",
        "firmware_version": "GDC5502Q", "smart_status": {"passed": True},
        "temperature": {"current": 38}, "power_on_time": {"hours": 8123}}})


def _perfmon_refresh(ctx, host, args):
    return "success"


def _echo(ctx, host, args):
    return "args were: " + repr(dict(sorted(args.items())))


PLUGINS = {  # plugin file in /etc/xapi.d/plugins -> {function: fn(ctx, host, args) -> str}
    "echo": {"main": _echo},
    "hyperthreading.py": {"get_hyperthreading": _hyperthreading},
    "smartctl.py": {"health": _smart_health, "information": _smart_information},
    "updater.py": {"check_update": lambda ctx, host, args: "[]"},
    "raid.py": {"check_raid_pool": lambda ctx, host, args: "{}"},
    "perfmon": {"refresh": _perfmon_refresh},
}


@action("host.call_plugin")
def call_plugin(ctx, host, plugin, fn, args):
    functions = PLUGINS.get(plugin)
    if functions is None:
        raise ApiError("XENAPI_MISSING_PLUGIN", plugin)
    if fn not in functions:
        raise ApiError("UNKNOWN_XENAPI_PLUGIN_FUNCTION", fn)  # what XenAPIPlugin.dispatch says
    return functions[fn](ctx, host, args)


@action("host.has_extension")
def has_extension(ctx, host, name):
    return False  # no API extension is installed


@action("host.call_extension")
def call_extension(ctx, host, call):
    try:
        request = json.loads(call)
        method = request["method"]
    except (ValueError, TypeError, KeyError):
        raise ApiError("INTERNAL_ERROR", f"Invalid JSON-RPC call: {call[:200]}") from None
    raise ApiError("MESSAGE_METHOD_UNKNOWN", method)


# ---------------------------------------------------------------------------------------------
# external authentication: no directory service can be reached from here
# ---------------------------------------------------------------------------------------------

@action("host.enable_external_auth")
def enable_external_auth(ctx, host, config, service_name, auth_type):
    row = ctx.store.get("host", host)
    if row["external_auth_type"]:
        raise ApiError("AUTH_ALREADY_ENABLED", row["external_auth_type"],
                       row["external_auth_service_name"])
    if auth_type != "AD":
        raise ApiError("AUTH_UNKNOWN_TYPE", auth_type)
    raise ApiError("AUTH_ENABLE_FAILED_DOMAIN_LOOKUP_FAILED",
                   f"Failed to look up the domain controller of {service_name}")


@action("host.disable_external_auth")
def disable_external_auth(ctx, host, config, force=False):
    row = ctx.store.get("host", host)
    if row["external_auth_type"]:  # nothing to do when none is enabled, as xapi
        ctx.store.update("host", host, {"external_auth_type": "", "external_auth_service_name": ""})


@action("host.external_auth_set_ldaps")
def external_auth_set_ldaps(ctx, host, ldaps, force=False):
    if ctx.store.get("host", host)["external_auth_type"] != "AD":
        raise ApiError("AUTH_IS_DISABLED")


# ---------------------------------------------------------------------------------------------
# HA, local caching, updates, TLS verification
# ---------------------------------------------------------------------------------------------

@action("host.emergency_ha_disable")
def emergency_ha_disable(ctx, soft=False):
    if not any(ctx.store.get("pool", p)["ha_enabled"] for p in ctx.store.refs("pool")):
        raise ApiError("HA_NOT_ENABLED")


@action("host.emergency_clear_mandatory_guidance")
def emergency_clear_mandatory_guidance(ctx):
    ctx.store.update("host", ctx.app.host_ref, {"pending_guidances": []})


@action("host.emergency_disable_tls_verification")
def emergency_disable_tls_verification(ctx):
    ctx.store.update("host", ctx.app.host_ref, {"tls_verification_enabled": False})


@action("host.emergency_reenable_tls_verification")
def emergency_reenable_tls_verification(ctx):
    ctx.store.update("host", ctx.app.host_ref, {"tls_verification_enabled": True})


LOCAL_CACHING_TYPES = ("ext", "nfs")  # SMs with the SR_SUPPORTS_LOCAL_CACHING feature


@action("host.enable_local_storage_caching")
def enable_local_storage_caching(ctx, host, sr):
    store = ctx.store
    assert_bacon_mode(store, host)
    row = store.get("SR", sr)
    pbds = store.field("SR", sr, "PBDs")
    if (row["shared"] or len(pbds) != 1 or store.get("PBD", pbds[0])["host"] != host
            or row["type"] not in LOCAL_CACHING_TYPES):
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)
    old = store.get("host", host)["local_cache_sr"]
    if old != NULL and store.exists("SR", old):
        store.update("SR", old, {"local_cache_enabled": False})
    store.update("host", host, {"local_cache_sr": sr})
    store.update("SR", sr, {"local_cache_enabled": True})


@action("host.disable_local_storage_caching")
def disable_local_storage_caching(ctx, host):
    store = ctx.store
    assert_bacon_mode(store, host)
    sr = store.get("host", host)["local_cache_sr"]
    store.update("host", host, {"local_cache_sr": NULL})
    if sr != NULL and store.exists("SR", sr):
        store.update("SR", sr, {"local_cache_enabled": False})


@action("host.apply_updates")
def apply_updates(ctx, self, hash):
    _assert_no_ha(ctx.store)
    pool = ctx.store.refs("pool")[0]
    if not ctx.store.get("pool", pool)["repositories"]:
        raise ApiError("NO_REPOSITORY_ENABLED")
    raise ApiError("GET_UPDATES_FAILED")  # the update server cannot be reached from here


# ---------------------------------------------------------------------------------------------
# the TLS server certificate (the one the HTTPS listener serves, in the state directory)
# ---------------------------------------------------------------------------------------------

def _cert_files(app):
    if app.state_dir is None:
        raise ApiError("INTERNAL_ERROR", "this server keeps no state directory, so no certificate")
    return app.state_dir / "server.crt", app.state_dir / "server.key"


@action("host.get_server_certificate")
def get_server_certificate(ctx, host):
    from ..server.tls import ensure_certificate

    cert, _ = _cert_files(ctx.app)
    if not cert.exists():  # HTTPS not served yet: the certificate it will use
        ensure_certificate(ctx.app.state_dir, [ctx.store.get("host", host)["address"]])
    return cert.read_text()


def _record_certificate(ctx, host: str, pem: bytes) -> None:
    """host.certificates holds one "host" Certificate: the one just installed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    store = ctx.store
    cert = x509.load_pem_x509_certificate(pem)

    def colons(h):
        return ":".join(f"{b:02X}" for b in h)

    fields = {"name": "", "type": "host", "host": host,
              "not_before": cert.not_valid_before_utc.replace(tzinfo=None),
              "not_after": cert.not_valid_after_utc.replace(tzinfo=None),
              "fingerprint": colons(cert.fingerprint(hashes.SHA256())),
              "fingerprint_sha256": colons(cert.fingerprint(hashes.SHA256())),
              "fingerprint_sha1": colons(cert.fingerprint(hashes.SHA1())), "purpose": []}
    for old in store.field("host", host, "certificates"):
        if store.get("Certificate", old)["type"] == "host":
            store.destroy("Certificate", old)
    store.create("Certificate", fields)


@action("host.install_server_certificate")
def install_server_certificate(ctx, host, certificate, private_key, certificate_chain=""):
    """Checked as xapi checks it; the HTTPS listener serves it from the agent's next start."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    cert_file, key_file = _cert_files(ctx.app)
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError):
        raise ApiError("SERVER_CERTIFICATE_KEY_INVALID") from None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise ApiError("SERVER_CERTIFICATE_KEY_RSA_LENGTH_NOT_SUPPORTED", key.key_size)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ApiError("SERVER_CERTIFICATE_KEY_ALGORITHM_NOT_SUPPORTED", type(key).__name__)
    try:
        cert = x509.load_pem_x509_certificate(certificate.encode())
    except ValueError:
        raise ApiError("SERVER_CERTIFICATE_INVALID") from None
    nowt = _dt.datetime.now(_dt.UTC)
    if cert.not_valid_before_utc > nowt:
        raise ApiError("SERVER_CERTIFICATE_NOT_VALID_YET", _stamp(nowt),
                       _stamp(cert.not_valid_before_utc))
    if cert.not_valid_after_utc < nowt:
        raise ApiError("SERVER_CERTIFICATE_EXPIRED", _stamp(nowt), _stamp(cert.not_valid_after_utc))
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.PEM, pub) != \
            key.public_key().public_bytes(serialization.Encoding.PEM, pub):
        raise ApiError("SERVER_CERTIFICATE_KEY_MISMATCH")
    if certificate_chain.strip():
        try:
            x509.load_pem_x509_certificates(certificate_chain.encode())
        except ValueError:
            raise ApiError("SERVER_CERTIFICATE_CHAIN_INVALID") from None
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    cert_file.write_bytes(pem + certificate_chain.strip().encode() + b"\n"
                          if certificate_chain.strip() else pem)
    _record_certificate(ctx, host, pem)


def _stamp(t: _dt.datetime) -> str:
    return t.astimezone(_dt.UTC).strftime("%Y%m%dT%H:%M:%SZ")


def _new_self_signed(ctx, host: str) -> None:
    from ..server.tls import ensure_certificate

    cert, key = _cert_files(ctx.app)
    for f in (cert, key):
        f.unlink(missing_ok=True)
    ensure_certificate(ctx.app.state_dir, [ctx.store.get("host", host)["address"]])
    _record_certificate(ctx, host, cert.read_bytes())


@action("host.reset_server_certificate")
def reset_server_certificate(ctx, host):
    _new_self_signed(ctx, host)


@action("host.emergency_reset_server_certificate")
def emergency_reset_server_certificate(ctx):
    _new_self_signed(ctx, ctx.app.host_ref)


@action("host.refresh_server_certificate")
def refresh_server_certificate(ctx, host):
    """xapi renews here the host-internal certificate pool members use between themselves;
    a pool of one host has no such traffic, so there is none to renew."""
