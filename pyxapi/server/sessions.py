"""Sessions: login, the check every call makes, expiry and caps, logout; and RBAC.

xapi's rules, kept here:
- root is the local superuser: its sessions may call anything (`rbac_permissions` empty);
  any other user logs in through its `subject` and gets the permissions of its roles.
- a session unused for `timeout` seconds (xapi: 24 h) is gone;
- sessions live as long as the server: xapi does not persist its session table, so a
  restart ends them all (their rows are dropped at start, api/session.py) and clients log in again;
- sessions are grouped as xapi groups them (root's by originator, other users' by user
  name, root's without originator together); past a group's cap the least recently used
  ones without pending tasks are destroyed.
A password change ends the sessions opened with the old password (the caller's own excepted
when it changes it through the API): sessions are revalidated against the user table every
`revalidate` seconds, which also catches `pyxapi user passwd` run beside the server.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from dataclasses import dataclass

from ..db.store import NULL, now
from ..errors import ApiError
from .audit import peer

log = logging.getLogger("pyxapi.sessions")

SESSION_TIMEOUT = 24 * 3600.0  # xapi's inactive_session_timeout
MAX_SESSIONS_PER_GROUP = 500  # xapi's max_sessions_per_originator / _per_user_name
MAX_ANONYMOUS_SESSIONS = 400  # xapi's max_sessions: root sessions without an originator
STAMP_INTERVAL = 30.0  # last_active is written back at most this often


@dataclass(slots=True)
class Live:
    """What the server keeps in memory about a session."""
    user: str
    superuser: bool
    roles: tuple
    permissions: frozenset
    password_hash: str  # the hash the session logged in with
    used: float  # wall clock of the last call
    stamped: float  # when last_active was last written
    validated: float

    def allows(self, permission: str) -> bool:
        return self.superuser or permission in self.permissions


class Throttle:
    """Failed logins slow down the following ones: each failure for a user or from an
    address doubles the wait (capped at xapi's 5 s); failures are forgotten after
    `forget` seconds or on the user's next success. Logins for one user are taken
    one at a time, so guessing in parallel gains nothing. The waits are asyncio
    sleeps: nothing else is held up."""

    def __init__(self, base=0.2, cap=5.0, forget=900.0):
        self.base, self.cap, self.forget = base, cap, forget
        self.failures: dict[str, tuple[int, float]] = {}
        self._locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def lock(self, user: str) -> asyncio.Lock:
        lock = self._locks.get(user)
        if lock is None:
            lock = self._locks[user] = asyncio.Lock()
        return lock

    def failed(self, keys) -> float:
        """Count a failure; returns how long its answer must wait."""
        t = time.monotonic()
        delay = 0.0
        for k in keys:
            n, last = self.failures.get(k, (0, t))
            n = n + 1 if t - last < self.forget else 1
            self.failures[k] = (n, t)
            delay = max(delay, min(self.cap, self.base * 2 ** (n - 1)))
        return delay

    def succeeded(self, key) -> None:
        self.failures.pop(key, None)

    def prune(self) -> None:
        t = time.monotonic()
        for k in [k for k, (_, last) in self.failures.items() if t - last >= self.forget]:
            del self.failures[k]


def _is_local(address: str) -> bool:
    """Loopback and the Unix socket: slowed per user only, not per address."""
    return address in ("local", "::1") or address.startswith("127.")


class Sessions:
    def __init__(self, app):
        self.app = app
        self.live: dict[str, Live] = {}
        self.throttle = Throttle()
        self.timeout = SESSION_TIMEOUT
        self.max_per_group = MAX_SESSIONS_PER_GROUP
        self.revalidate = float(os.environ.get("PYXAPI_SESSION_REVALIDATE", "5"))

    def configure(self, timeout: float | None = None, max_per_group: int | None = None) -> None:
        if timeout is not None:
            self.timeout = float(timeout)
        if max_per_group is not None:
            self.max_per_group = int(max_per_group)

    # ---- the check every call makes --------------------------------------------------------

    def check(self, ref, permission: str | None = None) -> str:
        """The session, if valid, and (given `permission`) allowed the call: RBAC's check
        made here, where the session is already in hand."""
        live = self.live.get(ref) if type(ref) is str else None
        if live is None or ref not in self.app.store.tables["session"]:
            raise ApiError("SESSION_INVALID", ref if type(ref) is str else "")
        t = time.time()
        if t - live.used > self.timeout:
            self._end(ref, "idle for longer than the session timeout")
            raise ApiError("SESSION_INVALID", ref)
        live.used = t
        if t - live.validated > self.revalidate:
            self._revalidate(ref, live, t)
        if t - live.stamped > STAMP_INTERVAL:
            live.stamped = t
            self.app.store.update("session", ref, {"last_active": now()})
        if permission is not None and not live.allows(permission):
            raise ApiError("RBAC_PERMISSION_DENIED", *self.app.rbac.denial(permission))
        return ref

    def _revalidate(self, ref: str, live: Live, t: float) -> None:
        user = self.app.users.get(live.user)
        current = user[1] if user else None
        if current is None or current != live.password_hash:
            self._end(ref, "its user's password changed or the user is gone")
            raise ApiError("SESSION_INVALID", ref)
        live.validated = t

    # ---- login and logout ------------------------------------------------------------------

    async def login(self, uname: str, password: str, originator: str = "") -> str:
        from ..api import rbac

        address = peer.get() or "local"
        keys = ("user:" + uname,) if _is_local(address) else ("user:" + uname, "peer:" + address)
        loop = asyncio.get_running_loop()
        async with self.throttle.lock(uname):
            user = await loop.run_in_executor(None, self.app.users.check, uname, password)
            if user is None:
                delay = self.throttle.failed(keys)
                log.warning("failed login for user %r from %s (originator %r); answering in %.1fs",
                            uname, address, originator, delay)
                await asyncio.sleep(delay)
                raise ApiError("SESSION_AUTHENTICATION_FAILED", uname, "Authentication failure")
            self.throttle.succeeded(keys[0])
        store = self.app.store
        superuser = uname == "root"
        subject, sid, roles = NULL, "", ("pool-admin",)
        if not superuser:
            subject = rbac.subject_of(store, uname) or rbac.make_subject(store, uname, [user[2]])
            sid = store.get("subject", subject)["subject_identifier"]
            roles = tuple(r for r in rbac.ROLE_ORDER if r in rbac.subject_roles(store, subject))
            if not roles:
                log.warning("login refused for user %r: its subject has no roles", uname)
                await asyncio.sleep(self.throttle.failed(keys))
                raise ApiError("RBAC_PERMISSION_DENIED", "session.login_with_password",
                               f"Subject {uname} (identifier {sid}) has no roles in this pool")
        permissions = [] if superuser else rbac.table().session_permissions(roles)
        t = now()
        ref = store.create("session", {
            "this_host": self.app.host_ref,
            "this_user": NULL,
            "last_active": t,
            "validation_time": t,
            "pool": False,
            "is_local_superuser": superuser,
            "subject": subject,
            "auth_user_name": uname,
            "auth_user_sid": sid,
            "originator": originator or "",
            "rbac_permissions": permissions,
            "parent": NULL,
        })
        wall = time.time()
        self.live[ref] = Live(uname, superuser, roles, frozenset(permissions), user[1], wall, wall, wall)
        log.info("login: user %r from %s (originator %r)", uname, address, originator)
        self._cap(uname, originator or "")
        return ref

    def logout(self, ref: str) -> None:
        if ref in self.app.store.tables["session"]:
            self.app.store.destroy("session", ref)
        self.live.pop(ref, None)

    def _end(self, ref: str, why: str) -> None:
        live = self.live.get(ref)
        log.info("session of %r ended: %s", live.user if live else "", why)
        self.logout(ref)

    async def change_password(self, ref: str, new: str) -> None:
        """session.change_password: the local superuser's; xapi ignores the old password."""
        live = self.live.get(ref)
        if live is None or not live.superuser:
            raise ApiError("USER_IS_NOT_LOCAL_SUPERUSER", "Failed to change password for user root")
        if not new:
            raise ApiError("CHANGE_PASSWORD_REJECTED", "the new password is empty")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.app.users.set, live.user, new, "pool-admin")
        live.password_hash = self.app.users.get(live.user)[1]
        for other, row in list(self.app.store.tables["session"].items()):
            if other != ref and row["auth_user_name"] == live.user:
                self._end(other, "password changed")

    # ---- housekeeping ----------------------------------------------------------------------

    def _cap(self, uname: str, originator: str) -> None:
        """Destroy the least recently used sessions of the caller's group past its cap."""
        rows = self.app.store.tables["session"]
        root = uname in ("", "root")
        if root and not originator:
            limit = min(self.max_per_group, MAX_ANONYMOUS_SESSIONS)
            group = [r for r, row in rows.items() if not row["pool"] and not row["originator"]
                     and row["auth_user_name"] in ("", "root")]
        elif root:
            limit = self.max_per_group
            group = [r for r, row in rows.items() if not row["pool"] and row["originator"] == originator
                     and row["auth_user_name"] in ("", "root")]
        else:
            limit = self.max_per_group
            group = [r for r, row in rows.items() if not row["pool"] and row["auth_user_name"] == uname]
        if len(group) <= limit:
            return
        disposable = [r for r in group if not self._busy(r)]
        disposable.sort(key=lambda r: self.live[r].used if r in self.live else 0.0)
        for r in disposable[: len(group) - limit]:
            self._end(r, f"more than {limit} sessions in its group")

    def _busy(self, ref: str) -> bool:
        tasks = self.app.store.tables["task"]
        row = self.app.store.tables["session"].get(ref)
        return row is not None and any(tasks.get(t, {}).get("status") == "pending" for t in row["tasks"])

    def sweep(self) -> None:
        """Periodic: end sessions idle past the timeout, forget old login failures."""
        t = time.time()
        for ref, live in list(self.live.items()):
            if t - live.used > self.timeout and not self._busy(ref):
                self._end(ref, "idle for longer than the session timeout")
        self.throttle.prune()

    # ---- what a session may do -------------------------------------------------------------

    def role(self, ref: str) -> str:
        """The session's highest role (the superuser is pool-admin)."""
        live = self.live[ref]
        if live.superuser:
            return "pool-admin"
        return live.roles[0] if live.roles else "read-only"


class Rbac:
    """A call needs the permission named after it (Sessions.check checks it); the error
    says which roles have it."""

    def __init__(self, app):
        self.app = app
        self._denial: dict[str, tuple[str, str]] = {}

    def denial(self, permission: str) -> tuple[str, str]:
        got = self._denial.get(permission)
        if got is None:
            from ..api.rbac import table

            roles = ", ".join(table().roles_with(permission))
            got = self._denial[permission] = (
                permission, f"No permission in user session. (Roles with this permission: {roles})")
        return got
