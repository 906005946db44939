"""auth.*: questions about subjects of the external directory.

xapi asks the enabled external authentication service; with none enabled every call answers
AUTH_IS_DISABLED. host.enable_external_auth cannot succeed here (no directory service can be
reached, see host.py), so a host only has an auth type set when its database says so; then
the service is unreachable and the question fails as xapi's does when the service errors.
"""
from __future__ import annotations

from ..errors import ApiError
from .registry import action


def _ask_directory(ctx) -> None:
    row = ctx.store.get("host", ctx.app.host_ref)
    if not row["external_auth_type"]:
        raise ApiError("AUTH_IS_DISABLED")
    raise ApiError("AUTH_SERVICE_ERROR",
                   f"the {row['external_auth_type']} service "
                   f"{row['external_auth_service_name']} cannot be reached")


@action("auth.get_subject_identifier")
def get_subject_identifier(ctx, subject_name):
    _ask_directory(ctx)


@action("auth.get_group_membership")
def get_group_membership(ctx, subject_identifier):
    _ask_directory(ctx)


@action("auth.get_subject_information_from_identifier")
def get_subject_information_from_identifier(ctx, subject_identifier):
    _ask_directory(ctx)
