"""DR_task.create: attach the SRs holding pool metadata found on a device (disaster recovery).

xapi needs an SR type whose SM driver has the SR_METADATA feature, probes the device for SRs
with metadata, and introduces and plugs the whitelisted ones it does not know yet. None of
the SR types here has that feature (no pool database is written into a VDI, see
vdi_extras.py), so the call stops where xapi stops for such a type.
"""
from __future__ import annotations

from ..errors import ApiError
from .registry import action
from .storage import supported_types

METADATA_SR_TYPES: tuple[str, ...] = ()  # SR types whose driver can hold pool metadata


@action("DR_task.create")
def create(ctx, type, device_config, whitelist):
    if type.lower() not in supported_types(ctx):
        raise ApiError("SR_UNKNOWN_DRIVER", type)
    if type.lower() not in METADATA_SR_TYPES:
        raise ApiError("OPERATION_NOT_ALLOWED",
                       f"Disaster recovery not supported on SRs of type {type}")
