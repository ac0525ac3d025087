"""Audit reads: filters, newest-first pagination, summaries and retention on a real database."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import and_, func, select
from tests.unit.store import plan_support

from fhirsync.store import audit_query as aq
from fhirsync.store.audit_query import AuditFilter, AuditMessage
from fhirsync.store.engine import Database, open_database
from fhirsync.store.tables import audit

pytestmark = pytest.mark.postgres

T0 = datetime(2024, 5, 1, 12, 0, 0)


@pytest.fixture
def db(db_url: str) -> Database:
    database = open_database(db_url)
    yield database  # type: ignore[misc]
    database.dispose()


def _msg(minutes: int, **kw: object) -> AuditMessage:
    values: dict[str, object] = {
        "id": None,
        "uuid": str(uuid.uuid4()),
        "success": True,
        "timestamp": T0 + timedelta(minutes=minutes),
        "resource_name": "patient",
        "operation": "PULL",
        "creator_instance_id": "clinic-a",
    }
    values.update(kw)
    return AuditMessage(**values)  # type: ignore[arg-type]


def _seed(db: Database, *messages: AuditMessage) -> list[AuditMessage]:
    with db.write() as conn:
        return [aq.insert_message(conn, m) for m in messages]


def test_list_is_newest_first_and_paginated(db: Database) -> None:
    stored = _seed(db, *(_msg(i) for i in range(25)))
    with db.read() as conn:
        first = aq.list_messages(conn, AuditFilter(), page=1, page_size=10)
        last = aq.list_messages(conn, AuditFilter(), page=3, page_size=10)
    assert first.total == 25 and first.page_count == 3
    assert [m.uuid for m in first.items] == [m.uuid for m in reversed(stored)][:10]
    assert [m.uuid for m in last.items] == [m.uuid for m in reversed(stored)][20:]


def test_filters_combine(db: Database) -> None:
    _seed(
        db,
        _msg(0, success=False),
        _msg(1, success=False, operation="PUSH"),
        _msg(2, success=False, resource_name="visit"),
        _msg(3, success=False, creator_instance_id="clinic-b"),
        _msg(4),
        _msg(90, success=False),
    )
    with db.read() as conn:

        def count(flt: AuditFilter) -> int:
            return aq.list_messages(conn, flt).total

        assert count(AuditFilter()) == 6
        assert count(AuditFilter(success=False)) == 5
        assert count(AuditFilter(success=False, operation="pull")) == 4
        assert count(AuditFilter(success=False, resource_name="VISIT")) == 1
        assert count(AuditFilter(creator_instance_id="clinic-b")) == 1
        window = AuditFilter(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=4))
        assert count(window) == 3
        assert aq.origins(conn) == ["clinic-a", "clinic-b"]
        assert aq.resource_names(conn) == ["patient", "visit"]


def test_voided_rows_are_hidden_but_readable(db: Database) -> None:
    (msg,) = _seed(db, _msg(0))
    with db.write() as conn:
        voided = aq.void_message(conn, msg.uuid)
    assert voided is not None and voided.voided
    with db.read() as conn:
        assert aq.list_messages(conn, AuditFilter()).total == 0
        assert aq.get_message(conn, msg.uuid) is not None
        assert aq.void_message(conn, "no-such-uuid") is None


def test_retryable_failures_exclude_retried_foreign_and_conflict_rows(db: Database) -> None:
    a, _b, _c, _d, _e, f = _seed(
        db,
        _msg(0, success=False),
        _msg(1, success=False, next_message_uuid="later"),
        _msg(2, success=False, creator_instance_id="clinic-b"),
        _msg(3, success=True),
        _msg(4, success=False, merge_conflict_uuid="c1", error_class="ConflictError"),
        _msg(5, success=False),
    )
    with db.read() as conn:
        everything = aq.failed_messages(conn, AuditFilter(), "clinic-a")
        assert [m.uuid for m in everything] == [a.uuid, f.uuid]
        first = aq.failed_messages(conn, AuditFilter(), "clinic-a", limit=1)
        assert [m.uuid for m in first] == [a.uuid]
        after = aq.failed_messages(conn, AuditFilter(), "clinic-a", after_id=first[0].id or 0)
        assert [m.uuid for m in after] == [f.uuid]


def test_retention_deletes_only_old_rows(db: Database) -> None:
    now = T0 + timedelta(days=100)
    _old, recent = _seed(db, _msg(0), _msg(60 * 24 * 95))
    with db.write() as conn:
        assert aq.apply_retention(conn, 30, now=now) == 1
    with db.read() as conn:
        assert [m.uuid for m in aq.list_messages(conn, AuditFilter()).items] == [recent.uuid]


def test_summaries(db: Database) -> None:
    _seed(
        db,
        _msg(0),
        _msg(5, success=False),
        _msg(70, success=False, resource_name="visit", operation="PUSH"),
    )
    with db.read() as conn:
        buckets = aq.activity(
            conn, since=T0, step=timedelta(hours=1), until=T0 + timedelta(hours=2)
        )
        assert [(b.succeeded, b.failed) for b in buckets] == [(1, 1), (0, 1), (0, 0)]
        assert aq.counts_by_category(conn, success=False) == {"patient": 1, "visit": 1}
        assert aq.counts_by_operation(conn) == {
            ("PULL", True): 1,
            ("PULL", False): 1,
            ("PUSH", False): 1,
        }
        last = aq.latest(conn, "push")
        assert last is not None and last.resource_name == "visit"


def test_a_record_s_audit_rows_are_found_through_an_index(db: Database) -> None:
    # The audit page's record filter and a record's history read every audit row: seconds on
    # a node with millions of them.
    _seed(db, *(_msg(i, record_uuid=f"rec-{i % 40}") for i in range(200)))
    cond = and_(*AuditFilter(record_uuid="rec-7").where())
    count = select(func.count()).select_from(audit).where(cond)
    listing = select(audit).where(cond).order_by(audit.c.timestamp.desc(), audit.c.id.desc())
    with db.read() as conn:
        for query in (count, listing):
            plan = plan_support.plan(conn, query)
            assert "ix_audit_record_uuid" in plan, plan
        found = aq.list_messages(conn, AuditFilter(record_uuid="rec-7"))
    assert found.total == 5 and {m.record_uuid for m in found.items} == {"rec-7"}


def test_the_message_a_retry_followed_is_found_through_an_index(db: Database) -> None:
    # A message's details page (and 'fhirsync audit show') names the failed message its retry
    # followed up: a read of every audit row per page shown.
    stored = _seed(db, *(_msg(i, success=False) for i in range(100)))
    followed, retry = stored[3], stored[50]
    with db.write() as conn:
        aq.update_message(conn, replace(followed, next_message_uuid=retry.uuid))
    query = select(audit).where(audit.c.next_message_uuid == retry.uuid)
    with db.read() as conn:
        plan = plan_support.plan(conn, query)
        assert "ix_audit_next_message_uuid" in plan, plan
        previous = aq.previous_message(conn, retry.uuid)
    assert previous is not None and previous.uuid == followed.uuid


def test_failures_still_to_handle_leave_out_what_was_handled(db: Database) -> None:
    # The dashboard counted every failed row: dismissing a failure raised the count (the
    # dismissal is a failed row too), and retried or conflicting records stayed in it.
    followed = _msg(1, success=False, resource_name="visit")
    _seed(
        db,
        _msg(0, success=False),
        replace(followed, next_message_uuid="the-retry"),
        _msg(2, success=False, resource_name="visit", error_class="Dismissed"),
        _msg(3, success=False, merge_conflict_uuid="a-conflict"),
        _msg(4, success=False, voided=True),
        _msg(5, success=False, creator_instance_id="clinic-b", resource_name="visit"),
        _msg(6),
        *(_msg(10 + n) for n in range(40)),
    )
    with db.read() as conn, plan_support.statements(conn) as sent:
        counted = aq.open_failures_by_category(conn)
    assert counted == {"patient": 1, "visit": 1}
    [(sql, params)] = sent
    with db.read() as conn:
        found = plan_support.plan_of_sql(conn, sql, params)
    assert "ix_audit_open_failures" in found, found
