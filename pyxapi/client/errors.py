"""How the command line tells a Xen-API failure: code, named parameters, one line of explanation."""
from __future__ import annotations

from ..model import load

# One line for the failures people meet most; the rest fall back to the parameter names.
EXPLAIN = {
    "SESSION_AUTHENTICATION_FAILED": "The user name or password is wrong.",
    "SESSION_INVALID": "The session is no longer valid (expired or logged out); run the command again.",
    "RBAC_PERMISSION_DENIED": "Your user's role does not allow this call.",
    "PERMISSION_DENIED": "This call is not allowed here.",
    "HANDLE_INVALID": "The object does not exist (any more).",
    "UUID_INVALID": "No object of this class has that uuid.",
    "NOT_IMPLEMENTED": "The server does not implement this call yet.",
    "MESSAGE_METHOD_UNKNOWN": "The server does not know this call (an older or newer API version?).",
    "MESSAGE_PARAMETER_COUNT_MISMATCH": "The call got the wrong number of parameters.",
    "MESSAGE_REMOVED": "This call was removed from the API.",
    "FIELD_TYPE_ERROR": "A value has the wrong type for its field.",
    "INVALID_VALUE": "A value is not one the field accepts.",
    "VALUE_NOT_SUPPORTED": "The value is not supported for this field.",
    "MAP_DUPLICATE_KEY": "The key is already in the map; remove it first or use param-set.",
    "OPERATION_NOT_ALLOWED": "The object is not in a state that allows this operation.",
    "OTHER_OPERATION_IN_PROGRESS": "Another operation on this object is running; try again when it ends.",
    "VM_BAD_POWER_STATE": "The VM is not in the power state this operation needs.",
    "VM_IS_TEMPLATE": "This is a template: install a VM from it first (vm-install).",
    "VM_REQUIRES_SR": "The VM needs a storage repository that is not available.",
    "VM_REQUIRES_NETWORK": "The VM needs a network that is not available.",
    "VM_NO_SUSPEND_SR": "There is no storage repository to write the suspend image to.",
    "VM_SHUTDOWN_TIMEOUT": "The VM did not shut down in time; use force=true to turn it off.",
    "VM_MISSING_PV_DRIVERS": "The guest has no PV drivers, so it cannot do this cleanly; try force=true.",
    "HOST_NOT_ENOUGH_FREE_MEMORY": "The host has not enough free memory to start this VM.",
    "MEMORY_CONSTRAINT_VIOLATION": "The memory settings break static-min <= dynamic-min <= dynamic-max <= static-max.",
    "SR_FULL": "The storage repository has not enough free space.",
    "VDI_IN_USE": "The disk is in use by a VM.",
    "DEVICE_ALREADY_EXISTS": "That device number is already used on this VM.",
    "INVALID_DEVICE": "That device name or number is not valid.",
    "LICENCE_RESTRICTION": "The host's licence does not allow this feature.",
    "TASK_CANCELLED": "The task was cancelled.",
    "EVENTS_LOST": "Too many events happened at once; start watching again.",
    "INTERNAL_ERROR": "The server failed unexpectedly; its log has the details.",
}


def describe(description: list[str], show_ref=None) -> str:
    """The text printed for a failure [code, params…].

    show_ref(param name, ref) may turn an OpaqueRef parameter into something a person
    recognises (its uuid and name); it is only asked about values that are refs.
    """
    code, params = description[0], description[1:]
    names = load().errors.get(code) or []
    lines = [f"Error: {code}"]
    for i, value in enumerate(params):
        name = names[i] if i < len(names) else f"param{i + 1}"
        if show_ref and value.startswith("OpaqueRef:") and value != "OpaqueRef:NULL":
            value = show_ref(name, value)
        lines.append(f"  {name}: {value}")
    if code in EXPLAIN:
        lines.append(EXPLAIN[code])
    elif names:
        lines.append(f"The server refused the call ({code}; parameters: {', '.join(names)}).")
    else:
        lines.append(f"The server refused the call ({code}).")
    return "\n".join(lines)
