"""Agreed versions (the base of three-way merges) written by concurrent commits."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from fhirsync.store import agreed
from fhirsync.store.engine import open_database
from fhirsync.testing.postgres import waiting_for_a_lock

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _row(uuid: str, family: str) -> agreed.Agreed:
    body = {"resourceType": "Patient", "name": [{"family": family}]}
    return agreed.of_body("patient", uuid, body, "active", None)


def test_commits_writing_the_same_rows_in_either_order_do_not_deadlock(db_url: str) -> None:
    # A pull page and a push batch settle at once (the scheduler runs both directions): each
    # upserted its records' agreed rows in its own order (the page's, the batch's), so on
    # PostgreSQL each could hold one row the other waited for, and one commit failed with
    # "deadlock detected" (its run crashed). SQLite's exclusive write transactions never met it.
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers (FHIRSYNC_TEST_DB=postgresql checks this)")
    db = open_database(db_url)
    errors: list[BaseException] = []
    try:
        with db.write() as conn:
            agreed.upsert_many(conn, [_row("a", "A0"), _row("b", "B0")], now=NOW)

        def other_order() -> None:
            try:
                with db.write() as conn:
                    agreed.upsert_many(conn, [_row("b", "B2"), _row("a", "A2")], now=NOW)
            except Exception as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

        other = threading.Thread(target=other_order)
        try:
            # This commit takes the rows in key order, one after the other.
            with db.write() as conn:
                agreed.upsert_many(conn, [_row("a", "A1")], now=NOW)
                other.start()
                deadline = time.monotonic() + 10
                while not waiting_for_a_lock(db) and time.monotonic() < deadline:
                    time.sleep(0.02)
                agreed.upsert_many(conn, [_row("b", "B1")], now=NOW)
        finally:
            other.join(30)
        assert errors == []
        with db.read() as conn:
            rows = agreed.get_many(conn, "patient", ["a", "b"])
        assert rows["a"].body == _row("a", "A2").body and rows["b"].body == _row("b", "B2").body
    finally:
        db.dispose()
