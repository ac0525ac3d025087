"""Admin-page login sessions and CSRF tokens, kept in signed cookies.

A session cookie carries the user name, role, a random nonce, an expiry and a stamp of the account's
password hash, signed with itsdangerous, so any process serving the node can check it (DESIGN.md
§6). A new password (``fhirsync user password``) changes the stamp, so it ends every session
signed in with the old one, including one an attacker holds. Signing out records the session's
nonce in the database (``store.signouts``) until it expires, so a copy of the cookie kept from
before is refused by every process, while the user's other sessions go on. The CSRF token of a form
is an HMAC of the session nonce: a page from this site can show it, another site cannot compute it.
Before login, a short-lived pre-login cookie provides the nonce for the login form.

The signing key is the ``session_secret`` setting if set, else a random key created once in
``NODE_DIR/.session-key`` with mode 0600 (never in code, never logged).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from itsdangerous import BadSignature, URLSafeTimedSerializer

from fhirsync.errors import ConfigurationError, Unauthenticated
from fhirsync.settings import NodeConfig
from fhirsync.store import signouts, users
from fhirsync.store.engine import Database
from fhirsync.store.users import Account, Role

SESSION_COOKIE = "fhirsync_session"
PRELOGIN_COOKIE = "fhirsync_prelogin"
KEY_FILE = ".session-key"
_PRELOGIN_SECONDS = 3600


class LoginRequired(Unauthenticated):
    """Raised when an admin page is requested without a valid session (answered by a redirect)."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in admin-page user."""

    user: str
    role: Role
    nonce: str
    expires: int
    stamp: str  # of the password hash at sign-in (:meth:`SessionManager.account_stamp`)

    @property
    def is_admin(self) -> bool:
        """Whether this user may change things (viewers may only look)."""
        return self.role == "admin"


def load_key(config: NodeConfig) -> bytes:
    """The session signing key: the setting, or the node's key file (created on first use)."""
    configured = config.settings.session_secret.get_secret_value()
    if configured:
        return configured.encode()
    path = config.node_dir / KEY_FILE
    try:
        return _read_or_create(path)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read or create the session key {path}: {exc.strerror}",
            field="session_secret",
        ) from exc


def _read_or_create(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class SessionManager:
    """Issues and checks session cookies and CSRF tokens for one node."""

    def __init__(self, key: bytes, *, lifetime_seconds: int, secure: bool) -> None:
        self._key = key
        self._sessions = URLSafeTimedSerializer(key, salt="fhirsync-session")
        self._prelogin = URLSafeTimedSerializer(key, salt="fhirsync-prelogin")
        self.lifetime_seconds = lifetime_seconds
        self.secure = secure

    def issue(self, user: str, role: Role, password_hash: str) -> tuple[str, Session]:
        """A new session for ``user`` (whose stored hash is ``password_hash``) and the cookie
        value carrying it."""
        session = Session(
            user,
            role,
            secrets.token_urlsafe(16),
            int(time.time()) + self.lifetime_seconds,
            self.account_stamp(password_hash),
        )
        value = self._sessions.dumps(
            [session.user, session.role, session.nonce, session.expires, session.stamp]
        )
        return value, session

    def account_stamp(self, password_hash: str) -> str:
        """A keyed digest of a stored password hash (the cookie never carries the hash itself)."""
        return hmac.new(self._key, f"account:{password_hash}".encode(), hashlib.sha256).hexdigest()

    def still_valid(self, session: Session, account: Account | None) -> bool:
        """Whether ``account`` (as stored now) still has the password ``session`` signed in with."""
        if account is None:
            return False
        return hmac.compare_digest(self.account_stamp(account.password_hash), session.stamp)

    def read(self, cookie: str | None) -> Session | None:
        """The session in ``cookie`` if its signature is good and it has not expired."""
        if not cookie:
            return None
        try:
            data = self._sessions.loads(cookie, max_age=self.lifetime_seconds)
        except BadSignature:
            return None
        # A cookie of an older fhirsync has no stamp (4 items): its user signs in again.
        if not isinstance(data, list) or len(data) != 5:
            return None
        user, role, nonce, expires, stamp = data
        if role not in ("admin", "viewer") or int(expires) < time.time():
            return None
        return Session(str(user), cast(Role, role), str(nonce), int(expires), str(stamp))

    def new_prelogin(self) -> tuple[str, str]:
        """A nonce for the login form and the cookie value carrying it."""
        nonce = secrets.token_urlsafe(16)
        return self._prelogin.dumps(nonce), nonce

    def read_prelogin(self, cookie: str | None) -> str | None:
        """The pre-login nonce in ``cookie``, if its signature is good and it is recent."""
        if not cookie:
            return None
        try:
            value: Any = self._prelogin.loads(cookie, max_age=_PRELOGIN_SECONDS)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None

    def csrf_token(self, nonce: str) -> str:
        """The CSRF token of forms shown to the holder of ``nonce``."""
        return hmac.new(self._key, f"csrf:{nonce}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        """Whether ``token`` is the CSRF token for ``nonce`` (constant-time comparison)."""
        if not nonce or not token:
            return False
        return hmac.compare_digest(self.csrf_token(nonce), token)


def current_account(db: Database, name: str) -> Account | None:
    """The account as stored now (None if deleted), so a removed or demoted user, or a changed
    password, ends a session."""
    with db.read() as conn:
        return users.account(conn, name)


def signed_in_account(db: Database, session: Session) -> Account | None:
    """The account of ``session`` as stored now; None if it was deleted or the session was
    signed out (:func:`sign_out`)."""
    with db.read() as conn:
        if signouts.is_revoked(conn, session.nonce):
            return None
        return users.account(conn, session.user)


def sign_out(db: Database, session: Session) -> None:
    """End ``session`` for every copy of its cookie, in every process serving the node."""
    with db.write() as conn:
        signouts.revoke(conn, session.nonce, datetime.fromtimestamp(session.expires, UTC))


def cookie_options(manager: SessionManager) -> dict[str, Any]:
    """Attributes of every cookie this module sets."""
    return {
        "httponly": True,
        "samesite": "lax",
        "secure": manager.secure,
        "path": "/sync2",
    }
