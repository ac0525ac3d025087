"""What a node knows about the nodes below it, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text
from tests.unit.store import plan_support

from fhirsync.records import RecordWrite
from fhirsync.store import audit_query, children, failures, users
from fhirsync.store import records as record_repo
from fhirsync.store.audit_query import AuditMessage
from fhirsync.store.engine import open_database
from fhirsync.store.failures import FailureNote
from fhirsync.store.tables import FROM_CHILDREN, records

T0 = datetime(2026, 11, 30, 8, 0)


@pytest.mark.postgres
def test_relaying_origins_are_the_children_and_the_origins_they_relayed(db_url: str) -> None:
    db = open_database(db_url)
    try:
        with db.write() as conn:
            record_repo.write(conn, RecordWrite("visittype", "v-0", {"name": "a"}, "central"))
            assert children.relaying_origins(conn) == frozenset()  # a leaf
            users.add(conn, "district", "password-123", "child", "district")
            writes = [
                RecordWrite("visittype", "v-1", {"name": "b"}, "clinic", via="child:district"),
                RecordWrite("visittype", "v-2", {"name": "c"}, "clinic", via="child:district"),
                RecordWrite("visittype", "v-3", {"name": "d"}, "elsewhere", via="parent"),
            ]
            record_repo.write_many(conn, writes)
        with db.read() as conn:
            assert children.relaying_origins(conn) == {"district", "clinic"}
    finally:
        db.dispose()


@pytest.mark.postgres
def test_the_records_received_from_children_are_found_through_their_own_index(
    db_url: str,
) -> None:
    # Every pull run of a district asks for these origins; a scan read every record, bodies
    # included (about a second a run for a million records).
    db = open_database(db_url)
    try:
        with db.write() as conn:
            users.add(conn, "district", "password-123", "child", "district")
            record_repo.write_many(
                conn,
                [
                    RecordWrite("visittype", f"v-{n}", {"name": str(n)}, "central", via="parent")
                    for n in range(50)
                ]
                + [RecordWrite("visittype", "v-c", {"name": "c"}, "clinic", via="child:district")],
            )
        query = select(records.c.origin).where(FROM_CHILDREN).distinct()
        with db.read() as conn:
            if conn.dialect.name == "sqlite":
                sql = str(query.compile(conn))
                plan = " ".join(
                    str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
                )
            else:
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # 51 rows: a scan is cheaper
                plan = " ".join(str(r[0]) for r in conn.execute(text("EXPLAIN " + str(query))))
            assert "ix_records_from_children" in plan, plan
            assert children.relaying_origins(conn) == {"district", "clinic"}
            assert children.received_per_child(conn) == {"district": 1}
    finally:
        db.dispose()


def _message(creator: str, minutes: int, **fields: object) -> AuditMessage:
    values: dict[str, object] = {
        "id": None,
        "uuid": str(uuidlib.uuid4()),
        "success": False,
        "timestamp": T0 + timedelta(minutes=minutes),
        "resource_name": "patient",
        "record_uuid": str(uuidlib.uuid4()),
        "operation": "PUSH",
        "creator_instance_id": creator,
    }
    values.update(fields)
    return AuditMessage(**values)  # type: ignore[arg-type]


@pytest.mark.postgres
def test_what_each_child_reported_is_one_query_through_indexes(db_url: str) -> None:
    # The Children page asked the audit log twice per child, each a scan of every row: 13.8 s
    # for 300 children and 500,000 rows.
    db = open_database(db_url)
    try:
        followed = _message("clinic-a", 1)
        resolved = _message("clinic-a", 2)
        rows = [
            *(_message("parent", n, success=True) for n in range(60)),  # the parent's own
            _message("clinic-a", 0),  # still failed: the one to count
            replace(followed, next_message_uuid="the-retry"),
            resolved,
            _message("clinic-a", 3, success=True),
            _message("clinic-a", 4, error_class="Dismissed"),
            _message("clinic-a", 5, merge_conflict_uuid="a-conflict"),
            _message("clinic-a", 9, voided=True),  # newer, but voided: not a sign of life
            _message("clinic-b", 7, success=True),
        ]
        with db.write() as conn:
            for name in ("clinic-a", "clinic-b", "clinic-c"):
                users.add(conn, name, "password-123", "child", name)
            for message in rows:
                audit_query.insert_message(conn, message)
            # Retried and succeeded with persistSuccessAudit off: no row links to it.
            note = FailureNote(
                "push", "push:patient", "patient", str(resolved.record_uuid), "tag:1",
                "CREATED", {}, "RemoteRejected", "refused", "parked", 3,
                audit_uuid=resolved.uuid,
            )  # fmt: skip
            failures.record(conn, [note], now=T0)
            failures.resolve(conn, "push", "patient", [str(resolved.record_uuid)])
        with db.read() as conn, plan_support.statements(conn) as sent:
            reports = children.reports_per_child(conn)
        assert reports == {
            "clinic-a": children.ChildReport(T0 + timedelta(minutes=5), 1),
            "clinic-b": children.ChildReport(T0 + timedelta(minutes=7), 0),
            "clinic-c": children.ChildReport(None, 0),
        }
        [(sql, params)] = sent
        with db.read() as conn:
            found = plan_support.plan_of_sql(conn, sql, params)
        assert "ix_audit_creator_time" in found and "ix_audit_open_failures" in found, found
        assert "ix_failures_audit_uuid" in found, found
    finally:
        db.dispose()


@pytest.mark.postgres
def test_what_each_child_pushed_is_read_from_an_index_of_their_changes(db_url: str) -> None:
    # The Children page counted each child's changes and found its newest in a read of every
    # event: about a second a page for two million events.
    db = open_database(db_url)
    try:
        with db.write() as conn:
            for name in ("clinic-a", "clinic-b"):
                users.add(conn, name, "password-123", "child", name)
            record_repo.write_many(
                conn,
                [
                    *(
                        RecordWrite(
                            "visittype", f"v-{n}", {"name": str(n)}, "central", via="parent"
                        )
                        for n in range(60)
                    ),
                    RecordWrite(
                        "visittype", "a-1", {"name": "a"}, "clinic-a", via="child:clinic-a"
                    ),
                    RecordWrite(
                        "visittype", "a-2", {"name": "b"}, "clinic-a", via="child:clinic-a"
                    ),
                ],
                now=T0,
            )
            record_repo.write_many(
                conn,
                [RecordWrite("visittype", "a-1", {"name": "c"}, "clinic-a", via="child:clinic-a")],
                now=T0 + timedelta(minutes=5),
            )
        with db.read() as conn, plan_support.statements(conn) as sent:
            assert children.changes_per_child(conn) == {"clinic-a": 3}
            assert children.last_push_per_child(conn) == {"clinic-a": T0 + timedelta(minutes=5)}
        assert len(sent) == 2
        for sql, params in sent:
            with db.read() as conn:
                found = plan_support.plan_of_sql(conn, sql, params)
            assert "ix_events_from_children" in found, found
    finally:
        db.dispose()
