"""Markers, failures, audit rows, locks and the local side's one-transaction commit."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from tests.unit.store import plan_support

from fhirsync import categories
from fhirsync.records import MarkerKey, RecordWrite
from fhirsync.store import conflicts, failures, locks, markers, runs
from fhirsync.store.audit import AuditEntry, AuditPolicy
from fhirsync.store.conflicts import ConflictNote
from fhirsync.store.engine import Database, open_database
from fhirsync.store.failures import FailureNote
from fhirsync.store.local import MarkerMove, PageCommit, StoreLocalSide
from fhirsync.store.tables import audit

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
KEY = MarkerKey("http://parent:1", "patient", "abc")


@pytest.fixture
def db(db_url: str) -> Database:
    database = open_database(db_url)
    yield database  # type: ignore[misc]
    database.dispose()


def _note(uuid: str, status: failures.FailureStatus = "retrying", attempts: int = 1) -> FailureNote:
    return FailureNote(
        "pull",
        KEY.key,
        "patient",
        uuid,
        "tag:x",
        "CREATED",
        {"fhir": "/x"},
        "InvalidResource",
        "bad",
        status,
        attempts,
        next_retry_at=NOW + timedelta(seconds=5),
    )


def test_marker_starts_empty_and_advances(db: Database) -> None:
    with db.read() as conn:
        assert markers.get(conn, KEY) == markers.EMPTY
    with db.write() as conn:
        markers.advance(conn, KEY, "tag:1", 1)
        markers.advance(conn, KEY, "tag:2", 3)
    with db.read() as conn:
        got = markers.get(conn, KEY)
        assert (got.last_entry_id, got.last_page) == ("tag:2", 3)
        assert markers.get(conn, MarkerKey("http://parent:1", "patient", "other")) == markers.EMPTY
        assert set(markers.for_feed(conn, "http://parent:1/")) == {"patient"}


def test_markers_move_to_a_new_address_with_their_failures(db: Database) -> None:
    moved_to = MarkerKey("http://parent:2", KEY.category, KEY.filter_hash)
    with db.write() as conn:
        markers.advance(conn, KEY, "tag:7", 2)
        markers.advance(conn, moved_to, "tag:stale", 9)  # an older visit to the new address
        failures.record(conn, [_note("u1", "parked", 3)], now=NOW)
        assert markers.move_feed(conn, "http://parent:1/", "http://parent:2") == 1
    with db.read() as conn:
        assert markers.get(conn, KEY) == markers.EMPTY
        got = markers.get(conn, moved_to)
        assert (got.last_entry_id, got.last_page) == ("tag:7", 2)
        assert [f.marker_key for f in failures.list_open(conn, "pull")] == [moved_to.key]


def test_failures_upsert_due_resolve_requeue(db: Database) -> None:
    with db.write() as conn:
        failures.record(conn, [_note("u1"), _note("u2", "waiting")], now=NOW)
        failures.record(conn, [_note("u1", "parked", 3)], now=NOW)
    with db.read() as conn:
        open_rows = failures.list_open(conn, "pull")
        assert [(f.record_uuid, f.status, f.attempts) for f in open_rows] == [
            ("u1", "parked", 3),
            ("u2", "waiting", 1),
        ]
        assert [f.record_uuid for f in failures.due(conn, "pull", "patient", now=NOW)] == ["u2"]
        assert failures.counts(conn, "pull") == {"parked": 1, "waiting": 1}
    with db.write() as conn:
        assert failures.requeue(conn) == 1
        failures.resolve(conn, "pull", "patient", ["u2"])
    with db.read() as conn:
        due = failures.due(conn, "pull", "patient", now=NOW)
        assert [(f.record_uuid, f.status, f.attempts) for f in due] == [("u1", "retrying", 0)]


def test_failures_for_review_put_parked_and_newest_first_and_counts_come_from_sql(
    db: Database,
) -> None:
    with db.write() as conn:
        for minute, (uuid, status) in enumerate(
            [("old-parked", "parked"), ("retry", "retrying"), ("new-parked", "parked")]
        ):
            failures.record(conn, [_note(uuid, status)], now=NOW + timedelta(minutes=minute))
        push = FailureNote(
            "push", "push:patient", "patient", "pushed", "tag:p", "UPDATED", {}, "X", "m",
            "parked", 3,
        )  # fmt: skip
        failures.record(conn, [push], now=NOW - timedelta(minutes=1))
        failures.record(conn, [_note("gone", "parked")], now=NOW + timedelta(hours=1))
        failures.resolve(conn, "pull", "patient", ["gone"])
    with db.read() as conn:
        review = failures.for_review(conn, 10)
        assert [f.record_uuid for f in review] == ["new-parked", "old-parked", "pushed", "retry"]
        assert failures.for_review(conn, 2) == review[:2]
        assert [f.record_uuid for f in failures.for_review(conn, 10, "push")] == ["pushed"]
        assert failures.open_counts(conn) == {
            ("pull", "parked"): 2,
            ("pull", "retrying"): 1,
            ("push", "parked"): 1,
        }


def test_commit_is_one_transaction_and_skips_unchanged_audit(db: Database) -> None:
    local = StoreLocalSide(db, "child", AuditPolicy(True, True))
    body = {"resourceType": "Patient", "gender": "male"}
    entry = AuditEntry(True, "patient", "p1", "CREATED", "PULL", "Success")
    batch = PageCommit(
        "pull",
        writes=[RecordWrite("patient", "p1", body, "parent", via="parent")],
        write_audit=[entry],
        failures=[_note("p2")],
        marker=MarkerMove(KEY, "tag:9", 2),
    )
    assert local.commit(batch, now=NOW).changed == 1
    again = local.commit(batch, now=NOW)
    assert (again.changed, again.audited) == (0, 0)
    assert local.marker(KEY).last_entry_id == "tag:9"
    assert set(local.read_many(categories.get("patient"), ["p1", "p2"])) == {"p1"}
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(audit)).scalar() == 1

    bad = PageCommit(
        "pull",
        writes=[RecordWrite("patient", "nope", None, "parent", state="voided")],
        marker=MarkerMove(KEY, "tag:10", 2),
    )
    with pytest.raises(Exception, match="does not exist"):
        local.commit(bad, now=NOW)
    assert local.marker(KEY).last_entry_id == "tag:9"


def test_audit_policy_and_retry_link(db: Database) -> None:
    local = StoreLocalSide(db, "child", AuditPolicy(persist_success=False, persist_failure=True))
    failed = AuditEntry(False, "patient", "p1", "CREATED", "PULL", "boom").with_uuid()
    ok = AuditEntry(True, "patient", "p1", "CREATED", "PULL", "Success")
    assert local.commit(PageCommit("pull", audit=[failed, ok]), now=NOW).audited == 1
    local.policy = AuditPolicy(True, True)
    retry = AuditEntry(True, "patient", "p1", "CREATED", "PULL", "ok", previous_uuid=failed.uuid)
    local.commit(PageCommit("pull", audit=[retry.with_uuid()]), now=NOW)
    with db.read() as conn:
        link = conn.execute(select(audit.c.next_message_uuid).where(audit.c.uuid == failed.uuid))
        assert link.scalar() is not None


def test_lock_excludes_a_second_owner_until_released(db: Database) -> None:
    a, b = locks.new_owner(), locks.new_owner()
    assert locks.acquire(db, "pull", a, 60)
    assert not locks.acquire(db, "pull", b, 60)
    assert locks.holder(db, "pull") == a
    locks.release(db, "pull", a)
    assert locks.acquire(db, "pull", b, 60)


def test_lock_of_a_dead_process_is_taken_over(db: Database) -> None:
    dead = f"{locks._HOST}:999999999:deadbeef"
    assert locks.acquire(db, "pull", dead, 600)
    assert locks.acquire(db, "pull", locks.new_owner(), 60)


def test_run_state_round_trip(db: Database) -> None:
    with db.write() as conn:
        runs.save(conn, "pull", started_at=NOW, outcome="ok", applied=3)
        runs.save(conn, "pull", backoff_seconds=2.0)
    with db.read() as conn:
        state = runs.get(conn, "pull")
    assert (state.outcome, state.applied, state.backoff_seconds) == ("ok", 3, 2.0)
    assert state.started_at == NOW


def _conflict_note(record_uuid: str) -> ConflictNote:
    body = b'{"resourceType":"Patient"}'
    return ConflictNote(
        "patient", record_uuid, "pull", None, None, body, "active", body, "active", None, ["x"]
    )


def test_a_conflict_is_found_by_its_prefix_in_any_case_and_never_by_a_pattern(
    db: Database,
) -> None:
    with db.write() as conn:
        (uuid,) = conflicts.record_many(conn, [_conflict_note("r-1")], now=NOW)
    with db.read() as conn:
        assert conflicts.get(conn, uuid.upper()) is not None
        assert conflicts.get(conn, uuid[:8].upper()) is not None
        # LIKE wildcards are characters here, not patterns: they name no conflict.
        for pattern in ("________", "%%%%%%%%", uuid[:7] + "%", uuid[:7] + "_"):
            assert conflicts.get(conn, pattern) is None, pattern


def test_taking_over_a_dead_process_lock_is_said(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # A serve killed mid-run (kill -9, a power cut) leaves its lock: the next run takes it at
    # once, and says whose it was, so an administrator knows the last run did not finish.
    dead = f"{locks._HOST}:999999999:deadbeef"
    assert locks.acquire(db, "pull", dead, 600)
    caplog.set_level(logging.WARNING, logger="fhirsync.store.locks")
    assert locks.acquire(db, "pull", locks.new_owner(), 60)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and dead in said[0] and "no longer runs" in said[0]


def test_taking_over_an_expired_lock_is_said(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    other_host = "another-host:1234:cafebabe"
    assert locks.acquire(db, "push", other_host, -1)
    caplog.set_level(logging.WARNING, logger="fhirsync.store.locks")
    assert locks.acquire(db, "push", locks.new_owner(), 60)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and other_host in said[0] and "expired" in said[0]


def test_a_free_or_own_lock_is_taken_quietly(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fhirsync.store.locks")
    owner = locks.new_owner()
    assert locks.acquire(db, "pull", owner, 60)
    assert locks.acquire(db, "pull", owner, 60)
    locks.release(db, "pull", owner)
    assert locks.acquire(db, "pull", locks.new_owner(), 60)
    assert caplog.records == []


def test_the_failure_an_audit_row_reported_is_found_through_an_index(db: Database) -> None:
    # A broken category can park tens of thousands of records; the audit page asks the status
    # of each row it shows, and every question read the whole failures table.
    notes = [replace(_note(f"u{n}"), audit_uuid=f"audit-{n}") for n in range(50)]
    with db.write() as conn:
        failures.record(conn, notes, now=NOW)
        failures.resolve(conn, "pull", "patient", ["u7"])
    with db.read() as conn, plan_support.statements(conn) as sent:
        statuses = failures.status_by_audit(conn, ["audit-7", "audit-8", "no-such-row"])
    assert statuses == {"audit-7": "resolved", "audit-8": "retrying"}
    [(sql, params)] = sent
    with db.read() as conn:
        found = plan_support.plan_of_sql(conn, sql, params)
    assert "ix_failures_audit_uuid" in found, found
