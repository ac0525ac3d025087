"""HTTP Basic authentication against the users table, with a short-lived verification cache.

argon2 is deliberately slow (tens of milliseconds); a syncing child sends many requests with the
same credentials, so a verified (name, password digest) pair is remembered for a minute. The cache
holds only digests, and is per process: another process simply verifies again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from fhirsync.errors import Forbidden, Unauthenticated
from fhirsync.store import users
from fhirsync.store.engine import Database
from fhirsync.store.users import Role, User

log = logging.getLogger(__name__)

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
        return self.authenticate(*_credentials(header))

    def remembered(self, header: str | None) -> User | None:
        """The user of ``header`` if its credentials were verified within the last minute, else
        None (unverified, wrong or malformed). Never blocks: no database, no argon2."""
        try:
            name, password = _credentials(header)
        except Unauthenticated:
            return None
        return self._remembered(_key(name, password))

    def _remembered(self, key: str) -> User | None:
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def authenticate(self, name: str, password: str) -> User:
        """The user if the password is right; Unauthenticated otherwise."""
        key = _key(name, password)
        now = time.monotonic()
        hit = self._remembered(key)
        if hit is not None:
            return hit
        with self._db.read() as conn:
            verified = users.verify(conn, name, password)
        if verified is None:
            raise Unauthenticated("Invalid credentials")
        user = verified.user
        if verified.outdated_hash is not None:
            self._upgrade(name, password, verified.outdated_hash)
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = (user, now + _TTL_SECONDS)
        return user

    def _upgrade(self, name: str, password: str, outdated: str) -> None:
        # Once per account hashed under older parameters. A failed write (a busy database) only
        # postpones the upgrade to a later login: the login itself has succeeded.
        try:
            with self._db.write() as conn:
                upgraded = users.upgrade_hash(conn, name, password, outdated)
        except SQLAlchemyError as exc:
            log.warning("user %s: could not store the upgraded password hash: %s", name, exc)
            return
        if upgraded:
            log.info("user %s: password hash upgraded to the current parameters", name)


def _credentials(header: str | None) -> tuple[str, str]:
    """(name, password) of an ``Authorization: Basic ...`` header; Unauthenticated if none."""
    if not header or not header.lower().startswith("basic "):
        raise Unauthenticated("Authentication required")
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthenticated("Authentication required") from exc
    name, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthenticated("Authentication required")
    return name, password


def _key(name: str, password: str) -> str:
    return hashlib.sha256(f"{name}\0{password}".encode()).hexdigest()


def require_role(user: User, *roles: Role) -> User:
    """``user`` if it has one of ``roles``; Forbidden otherwise."""
    if user.role not in roles:
        raise Forbidden(f"user {user.name!r} may not do this")
    return user
