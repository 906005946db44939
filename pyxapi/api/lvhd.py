"""LVHD.enable_thin_provisioning: xapi does not implement it itself but forwards it to the host
API extension of that name, which the SM package used to install (thin LVHD was dropped from
SM since). Like host.call_extension here, a call for an extension the host does not have is
MESSAGE_METHOD_UNKNOWN; the arguments are checked first, as the dispatcher does for any call.
"""
from __future__ import annotations

from ..errors import ApiError
from .registry import action


@action("LVHD.enable_thin_provisioning")
def enable_thin_provisioning(ctx, host, SR, initial_allocation, allocation_quantum):
    raise ApiError("MESSAGE_METHOD_UNKNOWN", "LVHD.enable_thin_provisioning")
