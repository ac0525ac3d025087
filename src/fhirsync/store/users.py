"""User accounts: admins, viewers and child nodes, with argon2 password hashes."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, delete, func, insert, select, update

from fhirsync import categories
from fhirsync.errors import ConfigurationError
from fhirsync.store.tables import users

Role = Literal["admin", "viewer", "child"]
ROLES: tuple[Role, ...] = ("admin", "viewer", "child")
# Argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane: ~16 ms here) rather than
# argon2-cffi's default (RFC 9106 low-memory: 64 MiB, 3 passes, 4 lanes: ~90 ms wall and ~140 ms of
# CPU on both cores of a 2-core parent). A child's every sync run begins with one verification,
# and a failed login costs the server the same, so the default made each run start late and each
# wrong password a bigger lever against a small parent. The parameters are stored in each hash:
# accounts hashed under other parameters still verify, and a server stores a new hash for them on
# their next successful login (:func:`upgrade_hash`).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_NAME_MAX = 255


@functools.cache
def _dummy_hash() -> str:
    # Verifying against this keeps the time of "no such user" equal to "wrong password". Made on
    # first use, not at import (~0.1 s that every command would pay); servers make it at start
    # (:func:`prepare_verification`), so even the first "no such user" takes the usual time.
    return _hasher.hash(secrets.token_urlsafe(16))


def prepare_verification() -> None:
    """Do the one-off work of :func:`verify` now (a server calls this when it starts)."""
    _dummy_hash()


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated account (never carries its password)."""

    name: str
    role: Role
    instance_id: str | None


def generate_password() -> str:
    """A strong random password (about 128 bits)."""
    return secrets.token_urlsafe(16)


def add(
    conn: Connection,
    name: str,
    password: str,
    role: Role,
    instance_id: str | None = None,
    *,
    node_instance_id: str | None = None,
) -> User:
    """Create a user; ConfigurationError if the name is taken or the role/password is unusable.

    A child account IS its instance id (the whitelist and the origin of what it pushes are bound
    to it), so the id must be a usable one, no other child account's, and not the id of this
    node itself (``node_instance_id``).
    """
    if role not in ROLES:
        raise ConfigurationError(
            f"unknown role {role!r} (use admin, viewer or child)", field="role"
        )
    check_name(name)
    check_password(password)
    if role == "child":
        _check_child_instance(conn, instance_id, node_instance_id)
    elif instance_id is not None:
        _check_instance_format(instance_id)
    if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
        raise ConfigurationError(f"user {name!r} already exists", field="name")
    conn.execute(
        insert(users).values(
            name=name,
            password_hash=_hasher.hash(password),
            role=role,
            instance_id=instance_id,
            created_at=datetime.now(UTC).replace(tzinfo=None),
        )
    )
    return User(name, role, instance_id)


@dataclass(frozen=True, slots=True)
class Verification:
    """A right password: its user and the stored hash it matched (``outdated`` if that hash was
    made with other parameters)."""

    user: User
    password_hash: str
    outdated: bool


@dataclass(frozen=True, slots=True)
class Account:
    """An account as stored now: the user and its password hash (for callers that remember a
    verification and must notice when the password changes or the account goes)."""

    user: User
    password_hash: str


def _check_child_instance(
    conn: Connection, instance_id: str | None, node_instance_id: str | None
) -> None:
    if not instance_id:
        raise ConfigurationError("a child account needs --instance-id", field="instance_id")
    _check_instance_format(instance_id)
    if instance_id == node_instance_id:
        raise ConfigurationError(
            f"{instance_id!r} is this node's own instance id: a child needs its own",
            field="instance_id",
        )
    owner = conn.execute(
        select(users.c.name).where(users.c.role == "child", users.c.instance_id == instance_id)
    ).first()
    if owner is not None:
        raise ConfigurationError(
            f"instance id {instance_id!r} already belongs to the child account {owner.name!r}",
            field="instance_id",
        )


def _check_instance_format(instance_id: str) -> None:
    if not categories.is_valid_id(instance_id):
        raise ConfigurationError(
            f"instance id {instance_id[:80]!r} is not usable: letters, digits, '-' and '.' only, "
            "at most 64 characters",
            field="instance_id",
        )


def check_name(name: str) -> None:
    """ConfigurationError when no login could use ``name``: blank, padded with spaces (not told
    apart from the unpadded name in a list), holding ':' (HTTP Basic ends the name at the first
    one) or a control character."""
    if not name.strip():
        raise ConfigurationError("a user name must not be blank", field="name")
    # users.name is VARCHAR(255): PostgreSQL refused a longer one with a bare database error.
    if len(name) > _NAME_MAX:
        raise ConfigurationError(f"a user name has at most {_NAME_MAX} characters", field="name")
    if name != name.strip():
        raise ConfigurationError(
            f"user name {name!r} starts or ends with spaces: leave them out", field="name"
        )
    if ":" in name:
        raise ConfigurationError(
            f"user name {name!r} holds ':', which HTTP Basic logins cannot carry", field="name"
        )
    if any(not c.isprintable() for c in name):
        raise ConfigurationError(f"user name {name!r} holds a control character", field="name")


def check_password(password: str) -> None:
    """ConfigurationError when ``password`` is too weak to be set."""
    if len(password) < 8:
        raise ConfigurationError("passwords must have at least 8 characters", field="password")


def set_password(conn: Connection, name: str, password: str) -> None:
    """Give ``name`` a new password; ConfigurationError if there is no such user or the password
    is unusable. A running server notices within seconds (:mod:`fhirsync.server.auth`)."""
    check_password(password)
    done = conn.execute(
        update(users).where(users.c.name == name).values(password_hash=_hasher.hash(password))
    )
    if done.rowcount == 0:
        raise ConfigurationError(f"there is no user {name!r}", field="name")


def remove(conn: Connection, name: str) -> User:
    """Delete the account ``name``; ConfigurationError if there is none, or if it is the last
    admin (nobody could then sign in to the admin pages)."""
    found = account(conn, name)
    if found is None:
        raise ConfigurationError(f"there is no user {name!r}", field="name")
    user = found.user
    if user.role == "admin":
        admins = conn.execute(
            select(func.count()).select_from(users).where(users.c.role == "admin")
        ).scalar_one()
        if admins <= 1:
            raise ConfigurationError(
                f"{name!r} is the last admin account: add another admin before removing it",
                field="name",
            )
    conn.execute(delete(users).where(users.c.name == name))
    return user


def verify(conn: Connection, name: str, password: str) -> Verification | None:
    """The verification if ``password`` is right; None otherwise (equal time whether or not the
    user exists)."""
    found = account(conn, name)
    stored = found.password_hash if found is not None else _dummy_hash()
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if found is None:
        return None
    return Verification(found.user, stored, _hasher.check_needs_rehash(stored))


def account(conn: Connection, name: str) -> Account | None:
    """The account ``name`` as stored now, or None if there is none (no password check)."""
    if "\x00" in name:
        # No account has one (check_name), and PostgreSQL refuses to even compare such text: a
        # sign-in naming one was a 500 there, not the 401 of any unknown name.
        return None
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        return None
    return Account(User(row.name, row.role, row.instance_id), row.password_hash)


def upgrade_hash(conn: Connection, name: str, password: str, outdated: str) -> str | None:
    """Replace ``name``'s ``outdated`` hash by one made with the current parameters; the new hash.

    ``password`` must be the one just verified against ``outdated``. Nothing changes (None) if the
    stored hash is no longer ``outdated``: a password set meanwhile is never overwritten.
    """
    new_hash = _hasher.hash(password)
    result = conn.execute(
        update(users)
        .where(users.c.name == name, users.c.password_hash == outdated)
        .values(password_hash=new_hash)
    )
    return new_hash if result.rowcount == 1 else None


def list_all(conn: Connection) -> list[User]:
    """Every account, by name."""
    rows = conn.execute(select(users).order_by(users.c.name))
    return [User(r.name, r.role, r.instance_id) for r in rows]
