"""Signed-out sessions, kept until they expire, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhirsync.store import signouts
from fhirsync.store.engine import open_database
from fhirsync.store.retention import AuditRetention

pytestmark = pytest.mark.postgres


def test_a_signed_out_session_is_refused_until_the_retention_pass_after_it_expires(
    db_url: str,
) -> None:
    db = open_database(db_url)
    now = datetime.now(UTC)
    try:
        with db.write() as conn:
            signouts.revoke(conn, "expired-nonce", now - timedelta(minutes=1))
            signouts.revoke(conn, "live-nonce", now + timedelta(hours=8))
            signouts.revoke(conn, "live-nonce", now + timedelta(hours=8))  # two tabs
        with db.read() as conn:
            assert signouts.is_revoked(conn, "live-nonce")
            assert signouts.is_revoked(conn, "expired-nonce")
            assert not signouts.is_revoked(conn, "other-nonce")
        AuditRetention(db, 90, "node").clean_up()  # the hourly pass of a serving node
        with db.read() as conn:
            assert signouts.is_revoked(conn, "live-nonce")
            assert not signouts.is_revoked(conn, "expired-nonce")
    finally:
        db.dispose()
