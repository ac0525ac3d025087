"""HTTP Basic authentication against the users table, with a verification cache.

argon2 is deliberately slow (~16 ms); a syncing child sends many requests with the same
credentials, so a verified (name, password digest) pair is remembered for an hour, together with
the stored hash it matched. Remembered credentials are answered without the database for a couple
of seconds at a time; after that one indexed read of the account confirms that its hash is still
the one verified. A password changed or an account removed by ``fhirsync user`` (another process)
therefore stops working within seconds, without another argon2 run for accounts that did not
change. The cache holds only digests, and is per process: another process simply verifies again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
from dataclasses import dataclass
from time import monotonic

from sqlalchemy.exc import SQLAlchemyError

from fhirsync.errors import Forbidden, Unauthenticated
from fhirsync.store import users
from fhirsync.store.engine import Database
from fhirsync.store.users import Role, User

log = logging.getLogger(__name__)

# How long remembered credentials are trusted without reading the account: the longest a changed
# password or a removed account keeps working on a running server.
RECHECK_SECONDS = 2.0
_REMEMBER_SECONDS = 3600.0
_CACHE_MAX = 1024


@dataclass(frozen=True, slots=True)
class _Remembered:
    user: User
    password_hash: str  # the stored hash the password was verified against
    trusted_until: float  # answered without the database until then
    expires: float  # verified with argon2 again after this


class Authenticator:
    """Checks Basic credentials; raises Unauthenticated without saying which part was wrong."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, _Remembered] = {}
        self._lock = threading.Lock()
        users.prepare_verification()  # the first unknown name takes as long as any other

    def authenticate_header(self, header: str | None) -> User:
        """The user named by an ``Authorization: Basic ...`` header."""
        return self.authenticate(*_credentials(header))

    def remembered(self, header: str | None) -> User | None:
        """The user of ``header`` if its credentials were verified and the account checked within
        the last :data:`RECHECK_SECONDS`, else None (the caller must call :meth:`authenticate`).
        Never blocks: no database, no argon2."""
        try:
            name, password = _credentials(header)
        except Unauthenticated:
            return None
        entry = self._entry(_key(name, password))
        if entry is not None and entry.trusted_until > monotonic():
            return entry.user
        return None

    def authenticate(self, name: str, password: str) -> User:
        """The user if the password is right; Unauthenticated otherwise."""
        key = _key(name, password)
        now = monotonic()
        entry = self._entry(key)
        if entry is not None and entry.trusted_until > now:
            return entry.user
        with self._db.read() as conn:
            if entry is not None and entry.expires > now:
                current = users.account(conn, name)
                if current is not None and current.password_hash == entry.password_hash:
                    self._remember(key, current.user, entry.password_hash, entry.expires)
                    return current.user
            verified = users.verify(conn, name, password)
        if verified is None:
            self._forget(key)
            raise Unauthenticated("Invalid credentials")
        stored = verified.password_hash
        if verified.outdated:
            stored = self._upgrade(name, password, stored) or stored
        self._remember(key, verified.user, stored, now + _REMEMBER_SECONDS)
        return verified.user

    def _entry(self, key: str) -> _Remembered | None:
        with self._lock:
            return self._cache.get(key)

    def _remember(self, key: str, user: User, password_hash: str, expires: float) -> None:
        trusted_until = monotonic() + RECHECK_SECONDS
        with self._lock:
            if len(self._cache) >= _CACHE_MAX and key not in self._cache:
                self._cache.clear()
            self._cache[key] = _Remembered(user, password_hash, trusted_until, expires)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def _upgrade(self, name: str, password: str, outdated: str) -> str | None:
        """The new hash, or None if it was not stored (then the next check verifies again)."""
        # Once per account hashed under older parameters. A failed write (a busy database) only
        # postpones the upgrade to a later login: the login itself has succeeded.
        try:
            with self._db.write() as conn:
                upgraded = users.upgrade_hash(conn, name, password, outdated)
        except SQLAlchemyError as exc:
            log.warning("user %s: could not store the upgraded password hash: %s", name, exc)
            return None
        if upgraded is not None:
            log.info("user %s: password hash upgraded to the current parameters", name)
        return upgraded


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
