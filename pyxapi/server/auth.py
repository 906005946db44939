"""Local users: salted scrypt hashes in the state database, and their roles."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

ROLES = ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only")
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "scrypt${}${}${}${}${}".format(_N, _R, _P, _b64(salt), _b64(digest))


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                         dklen=len(_unb64(digest)))
    return hmac.compare_digest(got, _unb64(digest))


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


# checked for unknown users, so they cost the same as known ones: a well-formed hash
# that nothing matches (random bytes, no scrypt run at import, which start-up waits on)
_DUMMY = "scrypt${}${}${}${}${}".format(_N, _R, _P, _b64(os.urandom(16)), _b64(os.urandom(32)))


class Users:
    """Local user accounts, kept in the persistence layer's `local_users` table."""

    def __init__(self, persistence):
        self.persistence = persistence
        self._memory: dict[str, tuple[str, str]] = {}

    def get(self, name: str):
        if self.persistence is None:
            got = self._memory.get(name)
            return (name, *got) if got else None
        return self.persistence.get_user(name)

    def set(self, name: str, password: str, role: str = "pool-admin") -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        h = hash_password(password)
        if self.persistence is None:
            self._memory[name] = (h, role)
        else:
            self.persistence.put_user(name, h, role)

    def list(self) -> list[tuple[str, str]]:
        """(name, role) of every local user."""
        if self.persistence is None:
            return sorted((n, v[1]) for n, v in self._memory.items())
        return [tuple(r) for r in self.persistence.users()]

    def check(self, name: str, password: str):
        """The user's (name, hash, role) if the password is right, else None."""
        row = self.get(name)
        if row is None:
            verify_password(password, _DUMMY)
            return None
        return row if verify_password(password, row[1]) else None
