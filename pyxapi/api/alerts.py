"""The alerts xapi raises by itself: a message about a VM once an operation on it has
succeeded (what Xen Orchestra and XenCenter list as "VM started", "VM shutdown"…).

As in xapi, they are made by the API operations only, after they completed: a failed or
cancelled operation raises none, and nothing is raised for what a guest does by itself (a
halt, reboot or crash inside the guest changes the power state without an alert; xapi's
VM_CRASHED exists but is never raised). A message that cannot be made (the VM is gone, its
name cannot be carried by XML) is dropped without failing the operation. xapi has no
other_config key to silence these; pool.other_config:mail-min-priority only filters e-mail.
"""
from __future__ import annotations

import logging

from ..errors import ApiError
from .message import create_message

log = logging.getLogger("pyxapi.alerts")

# operation -> (message name, priority, body after "VM '<name>' (uuid: <uuid>) ")
VM_ALERTS = {
    "start": ("VM_STARTED", 5, "started on host: {host} (uuid: {host_uuid})"),
    "resume": ("VM_RESUMED", 5, "resumed on host: {host} (uuid: {host_uuid})"),
    "shutdown": ("VM_SHUTDOWN", 5, "shutdown"),
    "hard_shutdown": ("VM_SHUTDOWN", 5, "shutdown forcibly"),
    "clean_reboot": ("VM_REBOOTED", 5, "rebooted cleanly"),
    "hard_reboot": ("VM_REBOOTED", 5, "rebooted forcibly"),
    "suspend": ("VM_SUSPENDED", 5, "suspended"),
    "pause": ("VM_PAUSED", 5, "paused"),
    "unpause": ("VM_UNPAUSED", 5, "unpaused"),
    "snapshot": ("VM_SNAPSHOTTED", 5, "snapshotted, snapshot name: {new_name}"),
    "checkpoint": ("VM_CHECKPOINTED", 5, "checkpointed, snapshot name: {new_name}"),
    "revert": ("VM_SNAPSHOT_REVERTED", 5,
               "reverted to snapshot: {snapshot} (uuid {snapshot_uuid})"),
    "migrate": ("VM_MIGRATED", 5, "migrated from host '{source}' (uuid: {source_uuid}) "
                "to host '{host}' (uuid: {host_uuid})"),
}


def vm_alert(ctx, vm: str, op: str, *, host: str | None = None, source: str | None = None,
             snapshot: str | None = None, new_name: str = "") -> None:
    """Raise the alert of ``op`` (a VM_ALERTS key) about ``vm``; the other objects the body
    names (hosts, the snapshot) are given by ref."""
    store = ctx.store
    if not store.exists("VM", vm):
        return
    name, priority, tail = VM_ALERTS[op]
    fields = {"new_name": new_name}
    for key, cls, ref in (("host", "host", host), ("source", "host", source),
                          ("snapshot", "VM", snapshot)):
        row = store.get(cls, ref) if ref is not None and store.exists(cls, ref) else {}
        fields[key], fields[key + "_uuid"] = row.get("name_label", ""), row.get("uuid", "")
    row = store.get("VM", vm)
    body = f"VM '{row['name_label']}' (uuid: {row['uuid']}) " + tail.format(**fields)
    try:
        create_message(store, name, priority, "VM", row["uuid"], body)
    except ApiError as e:
        log.info("no %s alert for VM %s: %s", name, row["uuid"], e)
