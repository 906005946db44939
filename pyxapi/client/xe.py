"""`xe`-style commands: `pyxapi vm-list`, `pyxapi vm-start uuid=…`, `pyxapi sr-param-list uuid=…`.

Generic for every class of the data model:
    <class>-list, <class>-param-list|param-get|param-set|param-add|param-remove|param-clear,
    and <class>-<message> for any message (vm-pause uuid=…, host-disable uuid=…): the object
    is chosen by uuid= / <class>=name-or-uuid / field filters, the other parameters are given
    as key=value with the message's parameter names (`-` for `_`).
Hand-written where xe's verb is more than one call: vm-install, vm-shutdown, vm-reboot,
vm-uninstall, vm-disk-add, vdi-create, vif-create, event-watch, user-add.
"""
from __future__ import annotations

import json
import shlex
import ssl
import sys
import time

from ..model.types import Map, Prim, Record, Ref, Set
from . import records as R
from .connection import Connection, Failure, UsageError, target_from
from .errors import describe
from .progress import run_async

# Options: name on the command line → key in opts. Everything else is key=value or the command.
VALUE_OPTIONS = {"-s": "s", "-p": "p", "--port": "port", "-u": "u", "-pw": "pw", "-pwf": "pwf",
                 "--unix": "unix"}
FLAG_OPTIONS = {"--minimal", "--json", "--multiple", "--nossl", "--no-verify"}
NO_ASYNC_CLASSES = ("session", "task", "event")  # the server has no Async.* form for these


class NoMatch(UsageError):
    """Nothing matched the selection: exit status 1, as xe."""


def parse_args(argv: list[str]) -> tuple[str | None, dict[str, str], dict]:
    command, args, opts = None, {}, {}
    it = iter(argv)
    for word in it:
        name, eq, inline = word.partition("=")
        if word.startswith("-") and name in VALUE_OPTIONS:
            value = inline if eq else next(it, None)
            if value is None:
                raise UsageError(f"{name} needs a value")
            opts[VALUE_OPTIONS[name]] = value
        elif word in FLAG_OPTIONS:
            opts[word[2:]] = True
        elif word.startswith("-"):
            raise UsageError(f"unknown option {word}")
        elif eq:
            args[name] = inline
        elif command is None:
            command = word
        else:
            raise UsageError(f"unexpected argument {word!r}: arguments are key=value")
    return command, args, opts


class Cli:
    def __init__(self, opts: dict, out=None, err=None):
        self.opts = opts
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._conn = None
        self._resolver = None

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            conn = Connection(target_from(self.opts))
            try:
                conn.login()
            except ssl.SSLCertVerificationError as e:
                raise ConnectionError(f"cannot connect to {conn.where}: {e.verify_message}; for a"
                                      " self-signed certificate add --no-verify") from None
            except OSError as e:
                raise ConnectionError(f"cannot connect to {conn.where}: {e}") from None
            self._conn = conn
        return self._conn

    @property
    def resolve(self) -> R.Resolver:
        if self._resolver is None:
            self._resolver = R.Resolver(self.conn)
        return self._resolver

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def ref_label(self, param: str, ref: str) -> str:
        """An error's ref parameter named after its class (vm, sr, vdi, …) as `uuid (name)`."""
        cls = next((c for c in R.model().classes if c.lower() == param.lower()), None)
        if cls is None or self._conn is None:
            return ref
        try:
            rec = self._conn.api(f"{cls}.get_record", ref)
        except (Failure, OSError):
            return ref
        name = rec.get("name_label")
        return f"{rec.get('uuid', ref)} ({name})" if name else rec.get("uuid", ref)

    def print_ref(self, cls: str, ref) -> None:
        """A created object: its uuid, which is what xe prints and scripts capture."""
        self.print(self.resolve.uuid(cls, ref) if ref else "")


# ---- choosing objects --------------------------------------------------------------------

def default_filters(xe_cls: str, filters: dict) -> dict:
    """xe's vm-list hides templates and snapshots; template-list and snapshot-list show them."""
    if "uuid" in filters:
        return filters
    implied = {"vm": {"is-a-template": "false"},
               "template": {"is-a-template": "true", "is-a-snapshot": "false"},
               "snapshot": {"is-a-snapshot": "true"}}.get(xe_cls, {})
    return {**implied, **filters}


def select(cli: Cli, xe_cls: str, cls: str, filters: dict) -> list[tuple[str, dict]]:
    """Objects for a verb: uuid=, <class>=name-or-uuid, or field filters; --multiple for several."""
    c = R.model().classes[cls]
    filters = dict(filters)
    by_name = filters.pop(xe_cls, None)
    if not filters and by_name is None and not cli.opts.get("multiple"):
        raise UsageError(f"choose the {xe_cls}: uuid=…, {xe_cls}=name-or-uuid, a field filter, or --multiple")
    found = R.select(cli.conn, c, default_filters(xe_cls, filters), cli.resolve)
    if by_name is not None:
        found = {r: rec for r, rec in found.items()
                 if by_name in (rec.get("uuid"), rec.get("name_label"))}
    if not found:
        raise NoMatch(f"No matching {xe_cls}s found")
    if len(found) > 1 and not cli.opts.get("multiple"):
        raise UsageError(f"{len(found)} {xe_cls}s match; add --multiple to act on all of them")
    return sorted(found.items(), key=lambda kv: kv[1].get("name_label") or "")


def one(cli: Cli, xe_cls: str, cls: str, filters: dict) -> tuple[str, dict]:
    objs = select(cli, xe_cls, cls, filters)
    if len(objs) > 1:
        raise UsageError(f"this command acts on one {xe_cls}; {len(objs)} match")
    return objs[0]


def take(args: dict, *names, default=None):
    """Remove and return a verb's own argument (first of its spellings given)."""
    for name in names:
        if name in args:
            return args.pop(name)
    return default


def flag(args: dict, name: str) -> bool:
    value = args.pop(name, "false").lower()
    if value not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        raise UsageError(f"{name}: expected true or false, not {value!r}")
    return value in ("true", "yes", "1", "on")


# ---- generic commands, for every class ---------------------------------------------------

def cmd_list(cli: Cli, xe_cls: str, cls: str, args: dict) -> int:
    c = R.model().classes[cls]
    fields = R.choose_fields(c, args.pop("params", None), all_by_default=False)
    found = R.select(cli.conn, c, default_filters(xe_cls, args), cli.resolve)
    recs = sorted(found.values(), key=lambda r: (r.get("name_label") or "", r.get("uuid") or ""))
    print_recs(cli, c, recs, fields)
    return 0


def print_recs(cli: Cli, c, recs: list[dict], fields: list[str]) -> None:
    if cli.opts.get("minimal"):
        R.print_minimal(c, recs, fields, cli.resolve, cli.out)
    elif cli.opts.get("json"):
        R.print_json(c, recs, fields, cli.resolve, cli.out)
    else:
        R.print_records(c, recs, fields, cli.resolve, cli.out)


def cmd_param_list(cli: Cli, xe_cls: str, cls: str, args: dict) -> int:
    c = R.model().classes[cls]
    if "uuid" not in args:
        raise UsageError("param-list needs uuid=")
    fields = R.choose_fields(c, args.pop("params", None), all_by_default=True)
    _, rec = one(cli, xe_cls, cls, args)
    print_recs(cli, c, [rec], fields)
    return 0


def _param(c, args: dict) -> str:
    name = take(args, "param-name")
    if name is None:
        raise UsageError("param-name= is required")
    f = R.field_of(c, name)
    if f is None:
        raise UsageError(f"Unknown field '{name}' of {R.xe_name(c.name).lower()}")
    return f


def cmd_param_get(cli: Cli, xe_cls: str, cls: str, args: dict) -> int:
    c = R.model().classes[cls]
    f = _param(c, args)
    key = take(args, "param-key")
    _, rec = one(cli, xe_cls, cls, args)
    t, value = c.fields[f].type, rec.get(f)
    if key is not None:
        if not isinstance(t, Map):
            raise UsageError(f"{R.xe_name(f)} is not a map: param-key= does not apply")
        if key not in value:
            raise NoMatch(f"Key {key} not found in map")
        t, value = t.value, value[key]
    if cli.opts.get("json"):
        cli.print(json.dumps(R.as_json(t, value, cli.resolve)))
    else:
        cli.print(R.show(t, value, cli.resolve))
    return 0


def cmd_param_set(cli: Cli, xe_cls: str, cls: str, args: dict) -> int:
    """field=value calls set_<field>; map-field:key=value sets one key of a map."""
    c = R.model().classes[cls]
    # as in xe, only uuid= (or <class>=name-or-uuid) chooses: every other key is a change
    chosen = {k: args.pop(k) for k in ("uuid", xe_cls) if k in args}
    if not chosen:
        raise UsageError(f"param-set needs uuid= (or {xe_cls}=name-or-uuid)")
    changes = dict(args)
    args.clear()
    if not changes:
        raise UsageError("nothing to set: give field=value or map-field:key=value")
    calls = []  # every value converted and checked before anything is sent
    for key, text in changes.items():
        name, colon, map_key = key.partition(":")
        f = R.field_of(c, name)
        if f is None:
            raise UsageError(f"Unknown field '{name}' of {xe_cls}")
        if colon:
            if not isinstance(c.fields[f].type, Map) or f"add_to_{f}" not in c.messages:
                raise UsageError(f"{R.xe_name(f)} is not a map that can be changed")
            value = R.convert(c.fields[f].type.value, text, cli.conn, f)
            calls += [(f"remove_from_{f}", [map_key]), (f"add_to_{f}", [map_key, value])]
        elif f"set_{f}" not in c.messages:
            raise UsageError(f"Parameter {R.xe_name(f)} is read-only")
        else:
            calls.append((f"set_{f}", [R.from_text(c, f, text, cli.conn)]))
    for ref, _ in select(cli, xe_cls, cls, chosen):
        for name, values in calls:
            cli.conn.api(f"{cls}.{name}", ref, *values)
    return 0


def cmd_param_add(cli: Cli, xe_cls: str, cls: str, args: dict) -> int:
    """Maps: param-name=other-config k=v …; sets: param-name=tags param-key=value."""
    c = R.model().classes[cls]
    f = _param(c, args)
    t = c.fields[f].type
    key = take(args, "param-key")
    uuid = take(args, "uuid")
    if isinstance(t, Map) and f"add_to_{f}" in c.messages:
        pairs = dict(args)
        args.clear()
        if key is not None:
            raise UsageError("for a map give the entries as key=value")
    elif isinstance(t, Set) and f"add_{f}" in c.messages:
        if key is None:
            raise UsageError("param-key= is required")
        pairs = None
    else:
        raise UsageError(f"{R.xe_name(f)} is not a map or set that can be added to")
    ref, _ = one(cli, xe_cls, cls, {"uuid": uuid} if uuid else args)
    if pairs is None:
        cli.conn.api(f"{cls}.add_{f}", ref, R.convert(t.elem, key, cli.conn, f))
    else:
        for k, v in pairs.items():
            cli.conn.api(f"{cls}.add_to_{f}", ref, k, R.convert(t.value, v, cli.conn, f))
    return 0


def cmd_param_remove(cli: Cli, xe_cls: str, cls: str, args: dict) -> int:
    c = R.model().classes[cls]
    f = _param(c, args)
    t = c.fields[f].type
    key = take(args, "param-key")
    if key is None:
        raise UsageError("param-key= is required")
    ref, _ = one(cli, xe_cls, cls, args)
    if isinstance(t, Map) and f"remove_from_{f}" in c.messages:
        cli.conn.api(f"{cls}.remove_from_{f}", ref, key)
    elif isinstance(t, Set) and f"remove_{f}" in c.messages:
        cli.conn.api(f"{cls}.remove_{f}", ref, R.convert(t.elem, key, cli.conn, f))
    else:
        raise UsageError(f"{R.xe_name(f)} is not a map or set that can be removed from")
    return 0


def cmd_param_clear(cli: Cli, xe_cls: str, cls: str, args: dict) -> int:
    c = R.model().classes[cls]
    f = _param(c, args)
    if f"set_{f}" not in c.messages:
        raise UsageError(f"Parameter {R.xe_name(f)} is read-only")
    t = c.fields[f].type
    empty = {} if isinstance(t, Map) else [] if isinstance(t, Set) else ""
    if empty == "" and not (isinstance(t, Prim) and t.name == "string"):
        raise UsageError(f"{R.xe_name(f)} cannot be cleared")
    ref, _ = one(cli, xe_cls, cls, args)
    cli.conn.api(f"{cls}.set_{f}", ref, empty)
    return 0


def call_message(cli: Cli, xe_cls: str, cls: str, name: str, args: dict, renames: dict | None = None,
                 label: str | None = None) -> int:
    """`<class>-<message>`: any message of the model, on the chosen object(s) when it takes one."""
    msg = R.model().message(f"{cls}.{name}")
    if msg is None:
        raise UsageError(f"Unknown command: {xe_cls}-{R.xe_name(name)} (try `pyxapi help`)")
    for xe_key, api_name in (renames or {}).items():
        if xe_key in args:
            args[api_name] = args.pop(xe_key)
    params = msg.params[1:] if msg.takes_session else msg.params
    on_self = bool(params) and params[0].type == Ref(cls)
    given = []
    for p in params[1:] if on_self else params:
        text = take(args, R.xe_name(p.name), p.name, R.xe_name(p.name) + "-uuid")
        if text is None:
            if isinstance(p.type, Prim) and p.type.name == "bool":
                given.append(False)  # xe's flags default to false (force=, paused=)
                continue
            if not p.required:
                break
            if isinstance(p.type, Record):
                raise UsageError(f"{xe_cls}-{R.xe_name(name)} takes a whole record: not available here")
            raise UsageError(f"{xe_cls}-{R.xe_name(name)} needs {R.xe_name(p.name)}=")
        given.append(R.convert(p.type, text, cli.conn, p.name))
    targets = [ref for ref, _ in select(cli, xe_cls, cls, args)] if on_self else [None]
    if not on_self and args:
        raise UsageError(f"unknown argument(s): {', '.join(args)}")
    use_async = cls not in NO_ASYNC_CLASSES and not msg.implicit
    for ref in targets:
        call_args = ([ref] if on_self else []) + given
        if use_async:
            result = run_async(cli.conn, msg.wire_name, *call_args, err=cli.err,
                               label=label or f"{xe_cls}-{R.xe_name(name)}")
        else:
            result = cli.conn.api(msg.wire_name, *call_args)
        print_result(cli, msg.result, result)
    return 0


def print_result(cli: Cli, t, value) -> None:
    if value is None or value == "" and isinstance(t, Prim) and t.name == "void":
        return
    if cli.opts.get("json"):
        cli.print(json.dumps(R.as_json(t, value, cli.resolve)))
    elif isinstance(t, Ref):
        cli.print_ref(t.cls, value)
    else:
        cli.print(R.show(t, value, cli.resolve))


GENERIC = {
    "list": cmd_list,
    "param-list": cmd_param_list,
    "param-get": cmd_param_get,
    "param-set": cmd_param_set,
    "param-add": cmd_param_add,
    "param-remove": cmd_param_remove,
    "param-clear": cmd_param_clear,
}


# ---- hand-written verbs ------------------------------------------------------------------

def vm_start(cli, args):
    return call_message(cli, "vm", "VM", "start", args, {"paused": "start-paused"})


def vm_resume(cli, args):
    return call_message(cli, "vm", "VM", "resume", args, {"paused": "start-paused"})


def vm_shutdown(cli, args):
    return call_message(cli, "vm", "VM", "hard_shutdown" if flag(args, "force") else "clean_shutdown", args,
                        label="vm-shutdown")


def vm_reboot(cli, args):
    return call_message(cli, "vm", "VM", "hard_reboot" if flag(args, "force") else "clean_reboot", args,
                        label="vm-reboot")


def vm_clone(cli, args):
    return call_message(cli, "vm", "VM", "clone", args, {"new-name-label": "new-name"})


def vm_snapshot(cli, args):
    return call_message(cli, "vm", "VM", "snapshot", args, {"new-name-label": "new-name"})


def vm_install(cli, args):
    """Clone the template (copy it when sr-uuid= is given), provision its disks, make it a VM."""
    template = take(args, "template", "template-uuid", "template-name-label")
    name = take(args, "new-name-label")
    sr_uuid = take(args, "sr-uuid")
    if not template or not name:
        raise UsageError("vm-install needs template=name-or-uuid and new-name-label=")
    if args:
        raise UsageError(f"unknown argument(s): {', '.join(args)}")
    tref, trec = one(cli, "template", "VM", {"template": template})
    conn = cli.conn
    if sr_uuid:
        sr = conn.api("SR.get_by_uuid", sr_uuid)
        vm = run_async(conn, "VM.copy", tref, name, sr, label="vm-install: copy", err=cli.err)
        disks = trec.get("other_config", {}).get("disks")
        if disks:  # the provision spec names the SR each new disk goes to
            conn.api("VM.remove_from_other_config", vm, "disks")
            conn.api("VM.add_to_other_config", vm, "disks", disks.replace('sr=""', f'sr="{sr_uuid}"'))
    else:
        vm = run_async(conn, "VM.clone", tref, name, label="vm-install: clone", err=cli.err)
    run_async(conn, "VM.provision", vm, label="vm-install: provision", err=cli.err)
    if conn.api("VM.get_is_a_template", vm):
        conn.api("VM.set_is_a_template", vm, False)
    cli.print_ref("VM", vm)
    return 0


def vm_uninstall(cli, args):
    """Destroy the VM and the disks only it uses (shutting it down first with force=true)."""
    force = flag(args, "force")
    vm, rec = one(cli, "vm", "VM", args)
    conn = cli.conn
    doomed = []
    for vbd in rec.get("VBDs", []):
        b = conn.api("VBD.get_record", vbd)
        if b["type"] != "Disk" or b["VDI"] == R.NULL_REF:
            continue
        users = conn.api("VDI.get_VBDs", b["VDI"])
        if all(conn.api("VBD.get_VM", u) == vm for u in users):
            doomed.append(b["VDI"])
    if not force:
        if not sys.stdin.isatty():
            raise UsageError("vm-uninstall destroys the VM and its disks: add force=true")
        cli.err.write(f"About to destroy VM {rec['name_label']} ({rec['uuid']}) and {len(doomed)} disk(s).\n"
                      "Type 'yes' to continue: ")
        cli.err.flush()
        if sys.stdin.readline().strip() != "yes":
            cli.print("Aborted")
            return 1
    if rec["power_state"].lower() != "halted":
        run_async(conn, "VM.hard_shutdown", vm, label="vm-uninstall: shutdown", err=cli.err)
    for vdi in doomed:
        conn.api("VDI.destroy", vdi)
    conn.api("VM.destroy", vm)
    return 0


def _default_sr(cli, sr_uuid: str | None) -> str:
    conn = cli.conn
    if sr_uuid:
        return conn.api("SR.get_by_uuid", sr_uuid)
    pool = conn.api("pool.get_all")[0]
    sr = conn.api("pool.get_default_SR", pool)
    if sr == R.NULL_REF:
        raise UsageError("the pool has no default SR: give sr-uuid=")
    return sr


def _new_vdi(cli, sr: str, name: str, size: int, args: dict) -> str:
    return cli.conn.api("VDI.create", {
        "name_label": name,
        "name_description": take(args, "name-description", default=""),
        "SR": sr,
        "virtual_size": size,
        "type": take(args, "type", default="user"),
        "sharable": flag(args, "sharable"),
        "read_only": flag(args, "read-only"),
        "other_config": {},
        "xenstore_data": {},
        "sm_config": {},
        "tags": [],
    })


def vdi_create(cli, args):
    name = take(args, "name-label")
    size = take(args, "virtual-size")
    if name is None or size is None:
        raise UsageError("vdi-create needs name-label= and virtual-size= (bytes, or with MiB/GiB)")
    sr = _default_sr(cli, take(args, "sr-uuid"))
    vdi = _new_vdi(cli, sr, name, _size(size, "virtual-size"), args)
    if args:
        raise UsageError(f"unknown argument(s): {', '.join(args)}")
    cli.print_ref("VDI", vdi)
    return 0


def _size(text: str, name: str) -> int:
    try:
        return R.parse_size(text)
    except ValueError:
        raise UsageError(f"{name}: expected a size in bytes (or with KiB/MiB/GiB/TiB), not {text!r}") from None


def vm_disk_add(cli, args):
    """A new disk on the VM: VDI.create, VBD.create on the first free device, plugged if running."""
    size = take(args, "disk-size")
    if size is None:
        raise UsageError("vm-disk-add needs disk-size= (bytes, or with MiB/GiB)")
    size = _size(size, "disk-size")
    sr_uuid = take(args, "sr-uuid")
    device = take(args, "device", default="autodetect")
    vm, rec = one(cli, "vm", "VM", args)
    conn = cli.conn
    if device == "autodetect":
        used = {conn.api("VBD.get_userdevice", b) for b in rec.get("VBDs", [])}
        device = next(str(i) for i in range(len(used) + 1) if str(i) not in used)
    vdi = _new_vdi(cli, _default_sr(cli, sr_uuid), f"{rec['name_label']} {device}", size, {})
    vbd = conn.api("VBD.create", {
        "VM": vm, "VDI": vdi, "userdevice": device, "bootable": False, "mode": "RW", "type": "Disk",
        "unpluggable": True, "empty": False, "other_config": {}, "qos_algorithm_type": "",
        "qos_algorithm_params": {},
    })
    if rec["power_state"].lower() == "running":
        run_async(conn, "VBD.plug", vbd, label="vm-disk-add: plug", err=cli.err)
    cli.print_ref("VDI", vdi)
    return 0


def vif_create(cli, args):
    vm_uuid, net_uuid, device = take(args, "vm-uuid"), take(args, "network-uuid"), take(args, "device")
    if not (vm_uuid and net_uuid and device):
        raise UsageError("vif-create needs vm-uuid=, network-uuid= and device=")
    conn = cli.conn
    vm = conn.api("VM.get_by_uuid", vm_uuid)
    net = conn.api("network.get_by_uuid", net_uuid)
    mac = take(args, "mac", default="")
    if args:
        raise UsageError(f"unknown argument(s): {', '.join(args)}")
    vif = conn.api("VIF.create", {
        "device": device, "network": net, "VM": vm,
        "MAC": "" if mac == "random" else mac,  # empty: the server picks one
        "MTU": int(conn.api("network.get_MTU", net) or 1500), "other_config": {},
        "qos_algorithm_type": "", "qos_algorithm_params": {},
        "locking_mode": "network_default", "ipv4_allowed": [], "ipv6_allowed": [],
    })
    cli.print_ref("VIF", vif)
    return 0


def event_watch(cli, args):
    """Print changes as they happen: class=vm,task (default all), count=N, timeout=SECONDS."""
    model = R.model()
    names = take(args, "class", default="*")
    classes = []
    for name in names.split(","):
        if name == "*":
            classes.append("*")
            continue
        try:
            classes.append(R.class_of(name + "-list")[1])
        except UsageError:
            raise UsageError(f"unknown class {name!r}") from None
    count = int(take(args, "count", default="0"))
    timeout = float(take(args, "timeout", default="0"))
    if args:
        raise UsageError(f"unknown argument(s): {', '.join(args)}")
    conn = cli.conn
    deadline = time.monotonic() + timeout if timeout else None
    token = conn.api("event.from", classes, "", 0.0)["token"]  # from now on, not the current state
    seen = 0
    while True:
        wait = 30.0 if deadline is None else max(0.0, deadline - time.monotonic())
        batch = conn.api("event.from", classes, token, wait)
        token = batch["token"]
        for ev in batch["events"]:
            cls = next((c for c in model.classes if c.lower() == ev["class"].lower()), ev["class"])
            snap = ev.get("snapshot") or {}
            if cli.opts.get("json"):
                cli.print(json.dumps({"class": R.xe_name(cls).lower(), "operation": ev["operation"],
                                      "ref": ev["ref"], "uuid": snap.get("uuid"), "snapshot": snap},
                                     default=str))
            else:
                cli.print(_event_line(cls, ev, snap, cli))
            seen += 1
            if count and seen >= count:
                return 0
        if deadline is not None and time.monotonic() >= deadline:
            return 0


def _event_line(cls: str, ev: dict, snap: dict, cli) -> str:
    c = R.model().classes.get(cls)
    words = [R.xe_name(cls).lower(), ev["operation"], snap.get("uuid") or ev["ref"]]
    if c is not None and snap:
        for f in R.default_fields(c):
            if f != "uuid" and f in snap:
                words.append(f"{R.xe_name(f)}={shlex.quote(R.show(c.fields[f].type, snap[f], cli.resolve))}")
    return " ".join(words)


def user_add(cli, args):
    """A local user, written to the server's state dir (on the server's machine, as admin)."""
    from .. import cli as server_cli

    name = take(args, "name", "user-name")
    if not name:
        raise UsageError("user-add needs name=")
    ns = type("Args", (), {})()
    ns.user_command, ns.name = "add", name
    ns.password = take(args, "password")
    ns.role = take(args, "role", default="pool-admin")
    ns.state_dir = take(args, "state-dir", default=server_cli.DEFAULT_STATE_DIR)
    if args:
        raise UsageError(f"unknown argument(s): {', '.join(args)}")
    return server_cli.user(ns)


VERBS = {
    "vm-install": vm_install,
    "vm-start": vm_start,
    "vm-shutdown": vm_shutdown,
    "vm-reboot": vm_reboot,
    "vm-resume": vm_resume,
    "vm-clone": vm_clone,
    "vm-snapshot": vm_snapshot,
    "vm-uninstall": vm_uninstall,
    "vm-disk-add": vm_disk_add,
    "vdi-create": vdi_create,
    "vif-create": vif_create,
    "event-watch": event_watch,
    "user-add": user_add,
}
LOCAL_VERBS = ("user-add",)  # no connection

HELP = """\
usage: pyxapi [-s HOST [--port PORT] [--nossl] [--no-verify] | --unix PATH] [-u USER] [-pw PASS | -pwf FILE]
              <command> [key=value …] [--minimal] [--json] [--multiple]

Connection: -s takes a host or a URL (http://host:port/); default https, or http with --nossl.
Environment: PYXAPI_HOST, PYXAPI_PORT, PYXAPI_USER, PYXAPI_PASSWORD, PYXAPI_UNIX.
With nothing given the client talks to http://127.0.0.1:8080/, where `pyxapi serve` listens.

For every class (vm, vdi, sr, network, vif, vbd, host, pool, task, …):
  <class>-list [params=a,b|all] [field=value …]      <class>-param-list uuid=…
  <class>-param-get uuid=… param-name=… [param-key=…] <class>-param-set uuid=… field=value map:key=value
  <class>-param-add / -param-remove / -param-clear    <class>-<message> uuid=… [param=value …]
Verbs:
  vm-install template=… new-name-label=… [sr-uuid=…]  vm-start|vm-resume [paused=true]
  vm-shutdown|vm-reboot [force=true]  vm-suspend  vm-clone|vm-snapshot new-name-label=…
  vm-uninstall [force=true]  vm-disk-add disk-size=… [sr-uuid=…] [device=…]
  vdi-create name-label=… virtual-size=… [sr-uuid=…]  vif-create vm-uuid=… network-uuid=… device=…
  event-watch [class=vm,task] [count=N] [timeout=S]  user-add name=… [password=…] [role=…] [state-dir=…]
Also: template-list, snapshot-list (VMs that are templates / snapshots); `pyxapi docs coverage`.
"""


def run(cli: Cli, command: str, args: dict) -> int:
    if command in VERBS:
        return VERBS[command](cli, args)
    xe_cls, cls, action = R.class_of(command)
    if action in GENERIC:
        return GENERIC[action](cli, xe_cls, cls, args)
    return call_message(cli, xe_cls, cls, action.replace("-", "_"), args)


def main(argv: list[str], out=None, err=None) -> int:
    err = err or sys.stderr
    cli = None
    try:
        command, args, opts = parse_args(argv)
        if command in (None, "help"):
            (out or sys.stdout).write(HELP)
            return 0 if command else 2
        cli = Cli(opts, out, err)
        return run(cli, command, args)
    except NoMatch as e:
        err.write(f"{e}\n")
        return 1
    except UsageError as e:
        err.write(f"Error: {e}\n")
        return 2
    except Failure as e:
        err.write(describe(e.description, cli.ref_label if cli else None) + "\n")
        return 1
    except (ConnectionError, OSError) as e:
        err.write(f"Error: {e}\n")
        return 3
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
    finally:
        if cli is not None:
            try:
                cli.close()
            except (OSError, KeyboardInterrupt):
                pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
