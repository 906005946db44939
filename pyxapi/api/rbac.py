"""RBAC as xapi has it: static roles made of permissions, and subjects for local users.

xapi keeps its roles outside the database: the seven roles plus one permission per API
call (the call's name in lower case, `vm.start`), each a `role` object; a role's
`subroles` are the permissions it grants, a permission has none. Here both are derived
from the model's per-message `roles` and placed in the store's `role` table as static
rows: never written, so neither persisted nor reported by event.from (as in xapi).

A local user made with `pyxapi user add NAME --role ROLE` is a `subject`
(subject_identifier `local:NAME`), created at start or at the user's first login;
its `roles` decide the permissions of the sessions it opens from then on.
"""
from __future__ import annotations

import functools
import uuid as _uuid

from ..errors import ApiError
from .bootstrap import on_loop_start_hook
from .generic import create_from_record
from .registry import action

ROLE_ORDER = ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator",
              "read-only", "client-cert")
ROLE_DESCRIPTIONS = {
    "pool-admin": "Full access, including subjects, roles and authentication settings",
    "pool-operator": "Manages the pool and its hosts, but not subjects, roles or authentication",
    "vm-power-admin": "Creates and manages VMs, including moving them between hosts",
    "vm-admin": "Creates and manages VMs and their storage and networks",
    "vm-operator": "Uses existing VMs: starts, stops and looks at them",
    "read-only": "Looks at everything, changes nothing",
    "client-cert": "Used internally by connections authenticated with a client certificate",
}
INTERNAL_ROLES = frozenset({"client-cert"})
# Permissions xapi checks inside calls rather than for a whole call.
EXTRA_PERMISSIONS = {"task.destroy/any": ("pool-admin", "pool-operator")}
SUBJECT_PREFIX = "local:"
_NAMESPACE = _uuid.UUID("5a4b7f0e-2a39-4d6e-9c7e-6b8f0f1d2c3b")


class RoleTable:
    """The static roles and permissions, computed once from the model."""

    def __init__(self, model):
        holders: dict[str, frozenset] = {}
        for c in model.classes.values():
            for msg in c.messages.values():
                if msg.roles:  # no roles: only the local superuser may call it, no permission
                    holders[msg.wire_name.lower()] = frozenset(msg.roles)
        for name, roles in EXTRA_PERMISSIONS.items():
            holders[name] = frozenset(roles)
        self.holders = holders  # permission -> the roles granting it
        self.granted = {r: frozenset(p for p, rs in holders.items() if r in rs) for r in ROLE_ORDER}
        self.ref = {name: _ref(name) for name in (*sorted(holders), *ROLE_ORDER)}
        self.name = {ref: name for name, ref in self.ref.items()}

    def rows(self):
        for p in sorted(self.holders):
            yield self.ref[p], {"uuid": self.ref[p][10:], "name_label": p, "name_description": "",
                                "subroles": [], "is_internal": False}
        for r in ROLE_ORDER:
            yield self.ref[r], {"uuid": self.ref[r][10:], "name_label": r,
                                "name_description": ROLE_DESCRIPTIONS[r],
                                "subroles": [self.ref[p] for p in sorted(self.granted[r])],
                                "is_internal": r in INTERNAL_ROLES}

    def is_role(self, ref: str) -> bool:
        return self.name.get(ref) in self.granted

    def roles_with(self, permission: str) -> list[str]:
        """Role names granting `permission`, in xapi's order (the permission itself excluded)."""
        held = self.holders.get(permission, ())
        return [r for r in ROLE_ORDER if r in held]

    def session_permissions(self, roles) -> list[str]:
        """What xapi puts in session.rbac_permissions: the role names and all they grant."""
        out = set(roles)
        for r in roles:
            out |= self.granted.get(r, frozenset())
        return sorted(out)


def _ref(name: str) -> str:
    return f"OpaqueRef:{_uuid.uuid5(_NAMESPACE, name)}"


@functools.cache
def table() -> RoleTable:
    from .. import model
    return RoleTable(model.load())


@on_loop_start_hook
async def install(app) -> None:
    """Put the static role rows in place and make a subject for every local user."""
    store = app.store
    roles = store.tables["role"]
    for ref, row in table().rows():
        roles[ref] = row
        store.uuids["role"][row["uuid"]] = ref
    for name, role in app.users.list():
        if name != "root" and subject_of(store, name) is None:
            make_subject(store, name, [role])


# ---- subjects ------------------------------------------------------------------------------

def subject_of(store, user: str) -> str | None:
    found = store.find("subject", subject_identifier=SUBJECT_PREFIX + user)
    return found[0] if found else None


def make_subject(store, user: str, role_names) -> str:
    t = table()
    return store.create("subject", {
        "subject_identifier": SUBJECT_PREFIX + user,
        "other_config": _subject_config(user),
        "roles": [t.ref[r] for r in role_names if r in t.granted],
    })


def _subject_config(user: str) -> dict:
    return {"subject-name": user, "subject-sid": SUBJECT_PREFIX + user, "subject-is-group": "false",
            "subject-account-disabled": "false", "subject-account-expired": "false",
            "subject-account-locked": "false", "subject-password-expired": "false"}


def subject_roles(store, subject: str) -> list[str]:
    t = table()
    return [t.name[r] for r in store.get("subject", subject)["roles"] if t.is_role(r)]


@action("subject.create")
def subject_create(ctx, record):
    sid = record.get("subject_identifier", "") if isinstance(record, dict) else ""
    if ctx.store.find("subject", subject_identifier=sid):
        raise ApiError("SUBJECT_ALREADY_EXISTS")
    if sid.startswith(SUBJECT_PREFIX):
        user = sid[len(SUBJECT_PREFIX):]
        if ctx.app.users.get(user) is None or user == "root":
            raise ApiError("SUBJECT_CANNOT_BE_RESOLVED")
        record = {**record, "other_config": {**_subject_config(user), **record.get("other_config", {})}}
    return create_from_record(ctx, "subject", {k: v for k, v in record.items() if k != "roles"})


@action("subject.destroy")
def subject_destroy(ctx, subject):
    sessions = ctx.store.find("session", subject=subject)
    ctx.store.destroy("subject", subject)
    for s in sessions:  # its sessions end with it
        ctx.app.sessions.logout(s)


@action("subject.add_to_roles")
def add_to_roles(ctx, subject, role):
    roles = ctx.store.get("subject", subject)["roles"]
    if not table().is_role(role):
        raise ApiError("ROLE_NOT_FOUND")
    if role in roles:
        raise ApiError("ROLE_ALREADY_EXISTS")
    ctx.store.update("subject", subject, {"roles": [*roles, role]})


@action("subject.remove_from_roles")
def remove_from_roles(ctx, subject, role):
    roles = ctx.store.get("subject", subject)["roles"]
    if role not in roles:
        raise ApiError("ROLE_NOT_FOUND")
    ctx.store.update("subject", subject, {"roles": [r for r in roles if r != role]})


@action("subject.get_permissions_name_label")
def subject_permissions(ctx, subject):
    return table().session_permissions(subject_roles(ctx.store, subject))


# ---- roles ---------------------------------------------------------------------------------

def _role_name(role: str) -> str:
    """The name of a role ref; an unknown one (NULL included) is HANDLE_INVALID, as in xapi."""
    name = table().name.get(role)
    if name is None:
        raise ApiError("HANDLE_INVALID", "role", role)
    return name


def _permissions(role: str) -> list[str]:
    t = table()
    name = _role_name(role)
    if name not in t.granted:
        return [role]  # a permission is its own only permission (xapi's leaf)
    return [t.ref[p] for p in sorted(t.granted[name])]


@action("role.get_permissions")
def get_permissions(ctx, role):
    return _permissions(role)


@action("role.get_permissions_name_label")
def get_permissions_name_label(ctx, role):
    return [_role_name(p) for p in _permissions(role)]


@action("role.get_by_permission")
def get_by_permission(ctx, permission):
    t = table()
    return [t.ref[r] for r in t.roles_with(_role_name(permission))]


@action("role.get_by_permission_name_label")
def get_by_permission_name_label(ctx, label):
    t = table()
    return [t.ref[r] for r in t.roles_with(label)]


# ---- session calls about subjects ----------------------------------------------------------

@action("session.get_all_subject_identifiers")
def get_all_subject_identifiers(ctx):
    rows = ctx.store.tables["session"].values()
    return sorted({r["auth_user_sid"] for r in rows if not r["is_local_superuser"] and r["auth_user_sid"]})


@action("session.logout_subject_identifier")
def logout_subject_identifier(ctx, subject_identifier):
    for ref, row in list(ctx.store.tables["session"].items()):
        if row["auth_user_sid"] == subject_identifier and ref != ctx.session:
            ctx.app.sessions.logout(ref)

