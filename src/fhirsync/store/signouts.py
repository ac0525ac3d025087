"""Admin-page sessions signed out before they expired: their cookies are refused until then.

A session lives in a signed cookie (``server.sessions``), so signing out only deleted the
browser's copy. Its nonce is kept here until the session would have expired anyway; every
process serving the node reads the same rows. The audit retention prunes expired ones.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, delete, select

from fhirsync.store import bulk
from fhirsync.store.tables import revoked_sessions


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def revoke(conn: Connection, nonce: str, expires_at: datetime) -> None:
    """Refuse the session with ``nonce`` from now until ``expires_at`` (signing out twice, or
    from two tabs at once, is no error: the row is written again)."""
    row = (nonce, bulk.db_time(conn, expires_at))
    bulk.upsert_rows(conn, revoked_sessions, ("nonce", "expires_at"), ("nonce",), [row])


def is_revoked(conn: Connection, nonce: str) -> bool:
    """Whether the session with ``nonce`` was signed out."""
    query = select(revoked_sessions.c.nonce).where(revoked_sessions.c.nonce == nonce)
    return conn.execute(query).first() is not None


def prune(conn: Connection, now: datetime) -> int:
    """Forget the sessions that have expired by ``now`` (their cookies are refused anyway);
    how many."""
    result = conn.execute(
        delete(revoked_sessions).where(revoked_sessions.c.expires_at < _naive(now))
    )
    return int(result.rowcount or 0)
