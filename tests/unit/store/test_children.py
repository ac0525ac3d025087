"""What a node knows about the nodes below it, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from fhirsync.records import RecordWrite
from fhirsync.store import children, users
from fhirsync.store import records as record_repo
from fhirsync.store.engine import open_database


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
