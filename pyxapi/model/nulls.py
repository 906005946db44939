"""Which Ref parameters take `OpaqueRef:NULL` (meaning "none") instead of refusing it.

xapi has no ref check at dispatch: a NULL fails with HANDLE_INVALID [class, ref] where the
implementation reads the object it names, and is taken where the implementation means "none".
The dispatcher refuses NULL in one place, except on the parameters that take it:
- every optional Ref parameter: its default is NULL, so sending NULL is leaving it out;
- the value of a generated setter of a Ref field: the database stores it, NULL clears the field;
- the hand-written messages listed in NULL_ACCEPTED, each with the reason xapi takes NULL.
"""
from __future__ import annotations

from .types import Ref

NULL_ACCEPTED = {
    "VM.copy:sr": "no SR: each disk is copied into the SR it is in",
    "VM.set_appliance:value": "takes the VM out of its appliance",
    "VM.set_snapshot_schedule:value": "takes the VM out of its snapshot schedule",
    "PIF.db_introduce:bond_slave_of": "a PIF that is no bond's slave",
    "PIF.db_introduce:VLAN_master_of": "a PIF that is no VLAN's master",
}


def accepts_null(model, msg, param) -> bool:
    """Whether `param` (a Ref parameter of `msg`) may be sent as OpaqueRef:NULL."""
    if not param.required:
        return True
    if msg.implicit and msg.name.startswith("set_") and param.name == "value":
        return msg.name[4:] in model.classes[msg.cls].fields
    return f"{msg.wire_name}:{param.name}" in NULL_ACCEPTED


def check_table(model) -> None:
    """Every entry of NULL_ACCEPTED names a Ref parameter of the model (checked at start)."""
    for key in NULL_ACCEPTED:
        name, _, param = key.partition(":")
        msg = model.message(name)
        if msg is None or not any(p.name == param and isinstance(p.type, Ref) for p in msg.params):
            raise RuntimeError(f"NULL_ACCEPTED names no Ref parameter of the model: {key}")
