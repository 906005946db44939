"""Sessions: login, the O(1) check every call makes, logout; and RBAC."""
from __future__ import annotations

import asyncio
import logging

from ..db.store import NULL, now
from ..errors import ApiError
from ..model import Message

log = logging.getLogger("pyxapi.sessions")


class Sessions:
    def __init__(self, app):
        self.app = app
        self.roles: dict[str, str] = {}  # session ref -> role name

    def check(self, ref) -> str:
        row = self.app.store.tables["session"].get(ref) if type(ref) is str else None
        if row is None:
            raise ApiError("SESSION_INVALID", ref if type(ref) is str else "")
        return ref

    async def login(self, uname: str, password: str, originator: str = "") -> str:
        loop = asyncio.get_running_loop()
        role = await loop.run_in_executor(None, self.app.users.check, uname, password)
        if role is None:
            log.warning("failed login for user %r (originator %r)", uname, originator)
            await asyncio.sleep(0.2)  # slows password guessing
            raise ApiError("SESSION_AUTHENTICATION_FAILED", uname, "Authentication failure")
        store = self.app.store
        ref = store.create("session", {
            "this_host": self.app.host_ref,
            "this_user": NULL,
            "last_active": now(),
            "validation_time": now(),
            "pool": False,
            "is_local_superuser": uname == "root",
            "auth_user_name": uname,
            "auth_user_sid": "",
            "originator": originator or "",
            "rbac_permissions": [],
            "parent": NULL,
        })
        self.roles[ref] = role
        return ref

    def logout(self, ref: str) -> None:
        if ref in self.app.store.tables["session"]:
            self.app.store.destroy("session", ref)
        self.roles.pop(ref, None)

    def role(self, ref: str) -> str:
        role = self.roles.get(ref)
        if role is None:  # a session from before a restart
            user = self.app.users.get(self.app.store.get("session", ref)["auth_user_name"])
            role = user[2] if user else "read-only"
            self.roles[ref] = role
        return role


class Rbac:
    def __init__(self, app):
        self.app = app

    def check(self, session: str, msg: Message) -> None:
        if not msg.roles:
            return
        role = self.app.sessions.role(session)
        if role not in msg.roles:
            raise ApiError("RBAC_PERMISSION_DENIED", msg.wire_name,
                           "No permission in user session")
