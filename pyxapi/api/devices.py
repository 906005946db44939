"""Host devices and what VMs get of them: PCI (dom0 access), GPUs (PGPU, GPU_group, VGPU_type,
VGPU), USB (PUSB, USB_group, VUSB) and VTPM.

As xapi does at every start, the host's PCI and USB devices are synced from what the backend
reports (the simulator: a BMC VGA, a Tesla T4, two X710 functions, a USB stick; see
backends/simulator/host.py). A display controller gets a PGPU in a GPU_group of its kind;
a USB device a PUSB in a USB_group of its own.
"""
from __future__ import annotations

from ..db.store import NULL
from ..errors import ApiError
from .bootstrap import on_loop_start_hook
from .generic import set_allowed_operations
from .network import group_members_to_destroy
from .registry import action


def _ctx(app):
    from ..server.dispatch import Context
    return Context(app, None)


async def _host_info(ctx) -> dict:
    return await ctx.backend.host_info() if ctx.backend is not None else {}


@on_loop_start_hook
async def sync_devices(app) -> None:
    ctx = _ctx(app)
    info = await _host_info(ctx)
    _sync_pcis(ctx.store, app.host_ref, info.get("pci_devices", []))
    _sync_pusbs(ctx.store, app.host_ref, info.get("usb_devices", []))
    refresh_dom0_access(ctx)


# ---------------------------------------------------------------------------------------------
# PCI
# ---------------------------------------------------------------------------------------------

_PCI_FIELDS = ("class_id", "class_name", "vendor_id", "vendor_name", "device_id", "device_name",
               "subsystem_vendor_id", "subsystem_vendor_name", "subsystem_device_id",
               "subsystem_device_name", "driver_name")


def _sync_pcis(store, host, devices: list[dict]) -> None:
    """A PCI row per device (kept across starts); functions of one slot depend on each other;
    PIFs point at their NIC's function; display controllers get their PGPU."""
    known = {store.get("PCI", p)["pci_id"]: p for p in store.field("host", host, "PCIs")}
    for dev in devices:
        if dev["pci_id"] not in known:
            known[dev["pci_id"]] = store.create("PCI", {
                "host": host, "pci_id": dev["pci_id"], "other_config": {},
                **{k: dev.get(k, "") for k in _PCI_FIELDS}})
    for pci_id, pci in known.items():
        slot = pci_id.rsplit(".", 1)[0]
        deps = sorted(p for i, p in known.items() if i != pci_id and i.rsplit(".", 1)[0] == slot)
        if sorted(store.get("PCI", pci)["dependencies"]) != deps:
            store.update("PCI", pci, {"dependencies": deps})
    for pif in store.field("host", host, "PIFs"):
        row = store.get("PIF", pif)
        if row["physical"] and row["PCI"] == NULL and store.exists("PIF_metrics", row["metrics"]):
            pci = known.get(store.get("PIF_metrics", row["metrics"])["pci_bus_path"])
            if pci is not None:
                store.update("PIF", pif, {"PCI": pci})
    for pci_id, pci in sorted(known.items()):
        if store.get("PCI", pci)["class_id"].startswith("03"):
            _ensure_pgpu(store, host, pci)


def _localdb(ctx):
    from .host import localdb   # host imports vm, which imports this module
    return localdb(ctx.app)


def _hidden(ctx) -> dict:
    """dom0's PCI hiding (xen-pciback.hide): the devices hidden since this boot and those the
    boot command line hides next time. A reboot since the last change applies the latter."""
    state = dict(_localdb(ctx).get("pci_dom0_hidden") or {})
    boot = ctx.store.get("host", ctx.app.host_ref)["other_config"].get("boot_time", "")
    cmdline = state.get("cmdline", [])
    now = state.get("now", []) if state.get("boot") == boot else cmdline
    return {"boot": boot, "now": now, "cmdline": cmdline}


def dom0_access(ctx, pci) -> str:
    st = _hidden(ctx)
    pci_id = ctx.store.get("PCI", pci)["pci_id"]
    hidden_now, hidden_next = pci_id in st["now"], pci_id in st["cmdline"]
    if hidden_now:
        return "disabled" if hidden_next else "enable_on_reboot"
    return "disable_on_reboot" if hidden_next else "enabled"


def _set_dom0_access(ctx, pci, enable: bool) -> str:
    st = _hidden(ctx)
    pci_id = ctx.store.get("PCI", pci)["pci_id"]
    cmdline = [p for p in st["cmdline"] if p != pci_id] + ([] if enable else [pci_id])
    _localdb(ctx).put("pci_dom0_hidden", {"boot": st["boot"], "now": st["now"],
                                             "cmdline": sorted(cmdline)})
    refresh_dom0_access(ctx)
    return dom0_access(ctx, pci)


def refresh_dom0_access(ctx) -> None:
    """PGPU.dom0_access as the PCI's status is now (after a change, a start, a boot)."""
    store = ctx.store
    for pgpu in store.refs("PGPU"):
        pci = store.get("PGPU", pgpu)["PCI"]
        if store.exists("PCI", pci):
            value = dom0_access(ctx, pci)
            if store.get("PGPU", pgpu)["dom0_access"] != value:
                store.update("PGPU", pgpu, {"dom0_access": value})


@action("PCI.get_dom0_access_status")
def pci_get_dom0_access_status(ctx, self):
    return dom0_access(ctx, self)


@action("PCI.enable_dom0_access")
def pci_enable_dom0_access(ctx, self):
    return _set_dom0_access(ctx, self, True)


@action("PCI.disable_dom0_access")
def pci_disable_dom0_access(ctx, self):
    return _set_dom0_access(ctx, self, False)


# ---------------------------------------------------------------------------------------------
# GPUs
# ---------------------------------------------------------------------------------------------

SYSTEM_DISPLAY_CLASS = "0300"   # the VGA the host boots on (the BMC's): dom0's console
PASSTHROUGH = {"vendor_name": "", "model_name": "passthrough", "framebuffer_size": 0,
               "max_heads": 0, "max_resolution_x": 0, "max_resolution_y": 0,
               "implementation": "passthrough", "identifier": "passthrough",
               "experimental": False, "compatible_types_in_vm": [],
               "compatible_types_on_pgpu": []}


def _passthrough_type(store) -> str:
    for t in store.find("VGPU_type", implementation="passthrough"):
        return t
    return store.create("VGPU_type", dict(PASSTHROUGH))


def gpu_type_of(pci_row: dict) -> str:
    return f"{pci_row['vendor_id']}/{pci_row['device_id']}"


def _ensure_pgpu(store, host, pci) -> str:
    for pgpu in store.find("PGPU", PCI=pci):
        return pgpu
    row = store.get("PCI", pci)
    system_display = row["class_id"] == SYSTEM_DISPLAY_CLASS
    # the system display device cannot be passed through: it is dom0's console
    types = [] if system_display else [_passthrough_type(store)]
    pgpu = store.create("PGPU", {
        "PCI": pci, "host": host, "other_config": {}, "supported_VGPU_types": types,
        "enabled_VGPU_types": types, "GPU_group": NULL,
        "supported_VGPU_max_capacities": {t: 1 for t in types},
        "dom0_access": "enabled", "is_system_display_device": system_display,
        "compatibility_metadata": {}})
    kind = gpu_type_of(row)
    groups = [g for g in store.refs("GPU_group") if store.get("GPU_group", g)["GPU_types"] == [kind]]
    group = groups[0] if groups else store.create("GPU_group", {
        "name_label": f"Group of {row['vendor_name']} {row['device_name']} GPUs",
        "name_description": "", "other_config": {}, "GPU_types": [kind],
        "allocation_algorithm": "depth_first"})
    store.update("PGPU", pgpu, {"GPU_group": group})
    _refresh_group_types(store, group)
    return pgpu


def _refresh_group_types(store, group) -> None:
    pgpus = store.field("GPU_group", group, "PGPUs")
    changes = {}
    for field in ("supported_VGPU_types", "enabled_VGPU_types"):
        types = sorted({t for p in pgpus for t in store.get("PGPU", p)[field]})
        if sorted(store.get("GPU_group", group)[field]) != types:
            changes[field] = types
    if changes:
        store.update("GPU_group", group, changes)


@action("PGPU.enable_dom0_access")
def pgpu_enable_dom0_access(ctx, self):
    return _set_dom0_access(ctx, ctx.store.get("PGPU", self)["PCI"], True)


@action("PGPU.disable_dom0_access")
def pgpu_disable_dom0_access(ctx, self):
    return _set_dom0_access(ctx, ctx.store.get("PGPU", self)["PCI"], False)


def pgpu_remaining_capacity(store, pgpu, vgpu_type) -> int:
    """What xapi counts: 0 unless the type is enabled there; else its capacity less the vGPUs
    resident or scheduled on it (none of another type may be there)."""
    row = store.get("PGPU", pgpu)
    if vgpu_type not in row["enabled_VGPU_types"]:
        return 0
    users = [v for v in store.refs("VGPU")
             if pgpu in (store.get("VGPU", v)["resident_on"],
                         store.get("VGPU", v)["scheduled_to_be_resident_on"])]
    if any(store.get("VGPU", v)["type"] != vgpu_type for v in users):
        return 0
    return max(0, row["supported_VGPU_max_capacities"].get(vgpu_type, 0) - len(users))


@action("PGPU.get_remaining_capacity")
def pgpu_get_remaining_capacity(ctx, self, vgpu_type):
    return pgpu_remaining_capacity(ctx.store, self, vgpu_type)


@action("GPU_group.get_remaining_capacity")
def gpu_group_get_remaining_capacity(ctx, self, vgpu_type):
    store = ctx.store
    return sum(pgpu_remaining_capacity(store, p, vgpu_type)
               for p in store.field("GPU_group", self, "PGPUs"))


def _destroy_group(store, cls: str, ref: str, virtual: str, physical: str) -> None:
    for v in group_members_to_destroy(store, cls, ref, virtual, physical):
        store.destroy(virtual, v)
    store.destroy(cls, ref)


@action("GPU_group.create")
def gpu_group_create(ctx, name_label, name_description, other_config):
    return ctx.store.create("GPU_group", {
        "name_label": name_label, "name_description": name_description,
        "other_config": dict(other_config), "GPU_types": [],
        "allocation_algorithm": "depth_first"})


@action("GPU_group.destroy")
def gpu_group_destroy(ctx, self):
    """Its vGPUs go with it, unless one is in use; a group with GPUs stays."""
    _destroy_group(ctx.store, "GPU_group", self, "VGPU", "PGPU")


@action("VGPU.destroy")
def vgpu_destroy(ctx, self):
    store = ctx.store
    row = store.get("VGPU", self)
    vm = store.get("VM", row["VM"]) if store.exists("VM", row["VM"]) else {}
    if row["currently_attached"] and vm.get("power_state") == "Running":
        raise ApiError("OPERATION_NOT_ALLOWED", "vGPU currently attached to a running VM")
    store.destroy("VGPU", self)


@action("VGPU.create")
def vgpu_create(ctx, VM, GPU_group, device, other_config, type):
    store = ctx.store
    if not device.isdigit():
        raise ApiError("INVALID_DEVICE", device)
    others = store.field("VM", VM, "VGPUs")
    if any(store.get("VGPU", v)["device"] == device for v in others):
        raise ApiError("DEVICE_ALREADY_EXISTS", device)
    # several vGPUs in one VM only of types that say they go together
    for v in others:
        if type not in store.get("VGPU_type", store.get("VGPU", v)["type"])[
                "compatible_types_in_vm"]:
            raise ApiError("VGPU_TYPE_NOT_COMPATIBLE", type)
    return store.create("VGPU", {
        "VM": VM, "GPU_group": GPU_group, "device": device, "type": type,
        "other_config": dict(other_config), "currently_attached": False,
        "resident_on": NULL, "scheduled_to_be_resident_on": NULL,
        "compatibility_metadata": {}, "extra_args": "", "PCI": NULL})


# ---------------------------------------------------------------------------------------------
# USB
# ---------------------------------------------------------------------------------------------

_PUSB_FIELDS = ("path", "vendor_id", "vendor_desc", "product_id", "product_desc", "serial",
                "version", "description", "speed")
MAX_VUSBS = 6


def _sync_pusbs(store, host, devices: list[dict]) -> None:
    """xapi's PUSB scan: a PUSB (and a USB_group of its own) for every device the policy lets
    through; those unplugged are forgotten with their empty groups."""
    key = lambda row: (row["vendor_id"], row["product_id"], row["serial"], row["path"])  # noqa
    present = {key(d): d for d in devices}
    for pusb in store.field("host", host, "PUSBs"):
        row = store.get("PUSB", pusb)
        if key(row) not in present:
            group = row["USB_group"]
            store.destroy("PUSB", pusb)
            if store.exists("USB_group", group) and not store.field("USB_group", group, "PUSBs") \
                    and not store.field("USB_group", group, "VUSBs"):
                store.destroy("USB_group", group)
        else:
            del present[key(row)]
    for dev in present.values():
        group = store.create("USB_group", {
            "name_label": f"Group of {dev['vendor_id']} {dev['product_id']} USBs",
            "name_description": "", "other_config": {}})
        store.create("PUSB", {"host": host, "USB_group": group, "passthrough_enabled": False,
                              "other_config": {}, **{k: dev[k] for k in _PUSB_FIELDS}})


@action("PUSB.scan")
async def pusb_scan(ctx, host):
    _sync_pusbs(ctx.store, host, (await _host_info(ctx)).get("usb_devices", []))


@action("USB_group.create")
def usb_group_create(ctx, name_label, name_description, other_config):
    return ctx.store.create("USB_group", {"name_label": name_label,
                                          "name_description": name_description,
                                          "other_config": dict(other_config)})


@action("USB_group.destroy")
def usb_group_destroy(ctx, self):
    """Its VUSBs go with it, unless one is plugged; a group with a device stays."""
    _destroy_group(ctx.store, "USB_group", self, "VUSB", "PUSB")


@action("PUSB.set_passthrough_enabled")
def pusb_set_passthrough_enabled(ctx, self, value):
    """A device a VM has cannot be given back to dom0 under it."""
    store = ctx.store
    if not value:
        for v in store.field("USB_group", store.get("PUSB", self)["USB_group"], "VUSBs"):
            row = store.get("VUSB", v)
            if row["currently_attached"]:
                raise ApiError("USB_ALREADY_ATTACHED", self, row["VM"])
    store.update("PUSB", self, {"passthrough_enabled": value})


_VUSB_OPS = ("attach", "plug", "unplug")


def vusb_op_errors(store, vusb) -> dict[str, tuple]:
    """op → the error it would fail with (xapi's policy for VUSBs, as for VIFs)."""
    row = store.get("VUSB", vusb)
    errors: dict[str, tuple] = {}
    if row["current_operations"]:
        task, running = next(iter(row["current_operations"].items()))
        for op in _VUSB_OPS:
            errors[op] = ("OTHER_OPERATION_IN_PROGRESS", "VUSB", vusb, running, task)
        return errors
    vm = row["VM"]
    power = store.get("VM", vm)["power_state"] if store.exists("VM", vm) else "Halted"
    if power == "Running":
        if row["currently_attached"]:
            errors["plug"] = ("DEVICE_ALREADY_ATTACHED", vusb)
        else:
            errors["unplug"] = ("DEVICE_ALREADY_DETACHED", vusb)
    else:
        for op in ("plug", "unplug"):
            errors[op] = ("VM_BAD_POWER_STATE", vm, "Running", power)
    return errors


def update_vusb_ops(store, vusb) -> None:
    errors = vusb_op_errors(store, vusb)
    set_allowed_operations(store, "VUSB", vusb, [op for op in _VUSB_OPS if op not in errors])


def _pgpu_order(store, group, vgpu_type, host) -> list[str]:
    """The group's GPUs on ``host`` that can take one more vGPU of the type, in the group's
    allocation order (depth first: the fullest first; breadth first: the emptiest)."""
    pgpus = [(pgpu_remaining_capacity(store, p, vgpu_type), p)
             for p in store.field("GPU_group", group, "PGPUs")
             if store.get("PGPU", p)["host"] == host]
    pgpus = [(c, p) for c, p in pgpus if c > 0]
    breadth = store.get("GPU_group", group)["allocation_algorithm"] == "breadth_first"
    return [p for c, p in sorted(pgpus, key=lambda cp: (-cp[0] if breadth else cp[0], cp[1]))]


def assert_devices_available(store, vm, host) -> None:
    """Before a VM boots on ``host``: a GPU for each vGPU, the device of each VUSB's group."""
    for vgpu in store.field("VM", vm, "VGPUs"):
        row = store.get("VGPU", vgpu)
        if store.get("VGPU", vgpu)["resident_on"] != NULL:
            continue
        if not store.exists("GPU_group", row["GPU_group"]) \
                or not _pgpu_order(store, row["GPU_group"], row["type"], host):
            if store.exists("VGPU_type", row["type"]) and \
                    store.get("VGPU_type", row["type"])["implementation"] == "passthrough":
                raise ApiError("VM_REQUIRES_GPU", vm, row["GPU_group"])
            raise ApiError("VM_REQUIRES_VGPU", vm, row["GPU_group"], row["type"])
    vusbs = store.field("VM", vm, "VUSBs")
    for vusb in vusbs:
        group = store.get("VUSB", vusb)["USB_group"]
        if not any(store.get("PUSB", p)["host"] == host
                   for p in store.field("USB_group", group, "PUSBs")):
            raise ApiError("VM_REQUIRES_VUSB", vm, group)
    if vusbs and store.get("VM", vm)["domain_type"] == "pv":
        raise ApiError("FEATURE_REQUIRES_HVM", "VUSB- and USB-passthrough needs HVM")


def follow_vm(store, vm, attached: bool | None) -> None:
    """vGPUs and VUSBs follow the VM: a started VM's vGPUs get a GPU of their group on its
    host, it has the stick of every group whose PUSB is passed through; a stopped VM gives
    them back. None: only refresh operations."""
    if attached is not None:
        host = store.get("VM", vm)["resident_on"]
        for vgpu in store.field("VM", vm, "VGPUs"):
            row = store.get("VGPU", vgpu)
            if attached and row["resident_on"] == NULL and store.exists("GPU_group",
                                                                         row["GPU_group"]):
                order = _pgpu_order(store, row["GPU_group"], row["type"], host)
                if order:
                    store.update("VGPU", vgpu, {
                        "resident_on": order[0], "currently_attached": True,
                        "PCI": store.get("PGPU", order[0])["PCI"],
                        "scheduled_to_be_resident_on": NULL})
            elif not attached and (row["resident_on"] != NULL or row["currently_attached"]):
                store.update("VGPU", vgpu, {"resident_on": NULL, "currently_attached": False,
                                            "PCI": NULL, "scheduled_to_be_resident_on": NULL})
    for vusb in store.field("VM", vm, "VUSBs"):
        row = store.get("VUSB", vusb)
        if attached is not None:
            value = attached and any(store.get("PUSB", p)["passthrough_enabled"]
                                     for p in store.field("USB_group", row["USB_group"], "PUSBs"))
            if row["currently_attached"] != value:
                store.update("VUSB", vusb, {"currently_attached": value})
        update_vusb_ops(store, vusb)


@action("VUSB.create")
def vusb_create(ctx, VM, USB_group, other_config):
    store = ctx.store
    if len(store.field("VM", VM, "VUSBs")) >= MAX_VUSBS:
        raise ApiError("TOO_MANY_VUSBS", str(MAX_VUSBS))
    # a group holds one device: one VUSB at a time
    if store.field("USB_group", USB_group, "VUSBs"):
        raise ApiError("USB_GROUP_CONFLICT", USB_group)
    if store.get("VM", VM)["ha_restart_priority"] == "restart":
        raise ApiError("OPERATION_NOT_ALLOWED",
                       f"VM {VM} ha_restart_priority has been set to 'restart', "
                       "cannot create VUSB for it. ")
    vusb = store.create("VUSB", {"VM": VM, "USB_group": USB_group,
                                 "other_config": dict(other_config),
                                 "currently_attached": False})
    update_vusb_ops(store, vusb)
    return vusb


@action("VUSB.unplug")
def vusb_unplug(ctx, self):
    store = ctx.store
    error = vusb_op_errors(store, self).get("unplug")
    if error:
        raise ApiError(*error)
    store.update("VUSB", self, {"currently_attached": False})
    update_vusb_ops(store, self)


@action("VUSB.destroy")
def vusb_destroy(ctx, self):
    store = ctx.store
    row = store.get("VUSB", self)
    if row["currently_attached"]:
        raise ApiError("OPERATION_NOT_ALLOWED",
                       f"VUSB '{row['uuid']}' still attached to "
                       f"'{store.get('VM', row['VM'])['uuid']}'")
    store.destroy("VUSB", self)


# ---------------------------------------------------------------------------------------------
# VTPM
# ---------------------------------------------------------------------------------------------

def _assert_halted(store, vm) -> None:
    power = store.get("VM", vm)["power_state"]
    if power != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", vm, "Halted", power)


@action("VTPM.create")
def vtpm_create(ctx, vM, is_unique):
    store = ctx.store
    _assert_halted(store, vM)
    pool = store.get("pool", ctx.app.pool_ref)
    if pool["restrictions"].get("restrict_vtpm", "false") != "false":
        raise ApiError("FEATURE_RESTRICTED", "restrict_vtpm")
    # its state lives in xapi's database, which a fenced host could not write back
    if pool["ha_enabled"] or store.refs("Cluster"):
        raise ApiError("NOT_IMPLEMENTED", "VTPM.create with HA or clustering enabled")
    vtpms = store.field("VM", vM, "VTPMs")
    if vtpms:
        raise ApiError("VTPM_MAX_AMOUNT_REACHED", str(len(vtpms)))
    return store.create("VTPM", {"VM": vM, "backend": NULL, "persistence_backend": "xapi",
                                 "is_unique": is_unique, "is_protected": False,
                                 "allowed_operations": ["destroy"], "current_operations": {}})


@action("VTPM.destroy")
def vtpm_destroy(ctx, self):
    store = ctx.store
    _assert_halted(store, store.get("VTPM", self)["VM"])
    store.destroy("VTPM", self)


# ---------------------------------------------------------------------------------------------
# a VM's devices when it is copied or destroyed
# ---------------------------------------------------------------------------------------------

def copy_vm_devices(store, src, dst) -> list[tuple[str, str]]:
    """A clone, copy or snapshot gets the VM's vGPUs and vTPMs (not its VUSBs: a device is
    one VM's). Returns the (class, ref) made."""
    made = []
    for vgpu in store.field("VM", src, "VGPUs"):
        row = store.get("VGPU", vgpu)
        made.append(("VGPU", store.create("VGPU", {
            "VM": dst, "GPU_group": row["GPU_group"], "device": row["device"],
            "type": row["type"], "other_config": dict(row["other_config"]),
            "extra_args": row["extra_args"], "currently_attached": False, "resident_on": NULL,
            "scheduled_to_be_resident_on": NULL, "compatibility_metadata": {}, "PCI": NULL})))
    for vtpm in store.field("VM", src, "VTPMs"):
        row = store.get("VTPM", vtpm)
        made.append(("VTPM", store.create("VTPM", {
            "VM": dst, "backend": NULL, "persistence_backend": row["persistence_backend"],
            "is_unique": row["is_unique"], "is_protected": False,
            "allowed_operations": ["destroy"], "current_operations": {}})))
    return made


def forget_vm_devices(store, vm) -> None:
    """A destroyed VM's vGPUs, VUSBs and vTPMs go with it."""
    for cls in ("VGPU", "VUSB", "VTPM"):
        for ref in store.field("VM", vm, cls + "s"):
            store.destroy(cls, ref)
