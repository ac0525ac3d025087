"""What a node knows about the nodes below it, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from fhirsync.records import RecordWrite
from fhirsync.store import children, users
from fhirsync.store import records as record_repo
from fhirsync.store.engine import open_database
from fhirsync.store.tables import FROM_CHILDREN, records


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
