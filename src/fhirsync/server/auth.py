"""HTTP Basic authentication against the users table, with a short-lived verification cache.

argon2 is deliberately slow (tens of milliseconds); a syncing child sends many requests with the
same credentials, so a verified (name, password digest) pair is remembered for a minute. The cache
holds only digests, and is per process: another process simply verifies again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time

from fhirsync.errors import Forbidden, Unauthenticated
from fhirsync.store import users
from fhirsync.store.engine import Database
from fhirsync.store.users import Role, User

_TTL_SECONDS = 60.0
_CACHE_MAX = 1024


class Authenticator:
    """Checks Basic credentials; raises Unauthenticated without saying which part was wrong."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, tuple[User, float]] = {}
        self._lock = threading.Lock()
        users.prepare_verification()  # the first unknown name takes as long as any other

    def authenticate_header(self, header: str | None) -> User:
        """The user named by an ``Authorization: Basic ...`` header."""
        if not header or not header.lower().startswith("basic "):
            raise Unauthenticated("Authentication required")
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthenticated("Authentication required") from exc
        name, sep, password = decoded.partition(":")
        if not sep:
            raise Unauthenticated("Authentication required")
        return self.authenticate(name, password)

    def authenticate(self, name: str, password: str) -> User:
        """The user if the password is right; Unauthenticated otherwise."""
        key = hashlib.sha256(f"{name}\0{password}".encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        with self._db.read() as conn:
            user = users.verify(conn, name, password)
        if user is None:
            raise Unauthenticated("Invalid credentials")
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = (user, now + _TTL_SECONDS)
        return user


def require_role(user: User, *roles: Role) -> User:
    """``user`` if it has one of ``roles``; Forbidden otherwise."""
    if user.role not in roles:
        raise Forbidden(f"user {user.name!r} may not do this")
    return user
