"""Named run locks in the database, so two processes never run the same sync job at once.

A lock is a row ``(name, owner, expires_at)``. It is taken in a write transaction (SQLite's
``BEGIN IMMEDIATE`` serialises writers; on PostgreSQL a racing insert loses on the primary key), so
it works across processes on both back ends. The holder refreshes the expiry while it works. A lock
whose owner died is taken over: at once when the owner was a process on this host that no longer
exists (a ``kill -9``), otherwise when it expires.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid as uuidlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from fhirsync.store.engine import Database
from fhirsync.store.tables import locks

log = logging.getLogger(__name__)
_HOST = socket.gethostname()


def new_owner() -> str:
    """An owner id: host, process id and a random part (two holders in one process differ)."""
    return f"{_HOST}:{os.getpid()}:{uuidlib.uuid4().hex[:8]}"


def _owner_is_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _stale(owner: str, expires_at: datetime, now: datetime) -> str:
    """Why ``owner``'s lock may be taken over ("" when it may not)."""
    if _owner_is_dead(owner):
        return "a process that no longer runs (killed mid-run?)"
    if expires_at <= now:
        return f"whose hold expired at {expires_at.isoformat(sep=' ', timespec='seconds')} UTC"
    return ""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def acquire(db: Database, name: str, owner: str, ttl: float) -> bool:
    """Take lock ``name`` for ``owner`` for ``ttl`` seconds; False if someone else holds it."""
    now = _now()
    try:
        with db.write() as conn:
            row = conn.execute(
                select(locks.c.owner, locks.c.expires_at)
                .where(locks.c.name == name)
                .with_for_update()
            ).first()
            if row is not None:
                taken_over = _stale(row.owner, row.expires_at, now) if row.owner != owner else ""
                if row.owner != owner and not taken_over:
                    return False
                conn.execute(delete(locks).where(locks.c.name == name))
                if taken_over:
                    # The last run of this job never finished (its process was killed, or lost
                    # its database): said once, so an administrator knows why.
                    log.warning("lock %s: taken over from %s, %s", name, row.owner, taken_over)
            conn.execute(
                insert(locks).values(
                    name=name, owner=owner, expires_at=now + timedelta(seconds=ttl)
                )
            )
    except IntegrityError:
        # Another process inserted the row between our read and our insert: it holds the lock.
        return False
    return True


def refresh(db: Database, name: str, owner: str, ttl: float) -> None:
    """Extend ``owner``'s hold on ``name`` by ``ttl`` seconds from now."""
    with db.write() as conn:
        conn.execute(
            update(locks)
            .where(locks.c.name == name, locks.c.owner == owner)
            .values(expires_at=_now() + timedelta(seconds=ttl))
        )


def keeper(db: Database, name: str, owner: str, ttl: float) -> Callable[[], None]:
    """A function to call as a run makes progress: it extends ``owner``'s hold on ``name`` by
    ``ttl`` once ``ttl / 4`` seconds have passed since the last extension. A run may outlast
    ``ttl``, and an expired lock lets a second run start beside it."""
    last = [time.monotonic()]

    def keep() -> None:
        if time.monotonic() - last[0] > ttl / 4:
            refresh(db, name, owner, ttl)
            last[0] = time.monotonic()

    return keep


def release(db: Database, name: str, owner: str) -> None:
    """Give up ``owner``'s hold on ``name`` (no-op if it does not hold it)."""
    with db.write() as conn:
        conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))


def holder(db: Database, name: str) -> str | None:
    """The current, unexpired holder of ``name``, if any."""
    with db.read() as conn:
        row = conn.execute(
            select(locks.c.owner, locks.c.expires_at).where(locks.c.name == name)
        ).first()
    if row is None or row.expires_at <= _now() or _owner_is_dead(row.owner):
        return None
    return str(row.owner)
