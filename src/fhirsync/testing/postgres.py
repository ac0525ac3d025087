"""Throw-away PostgreSQL databases on the local server (127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import os
import uuid

import psycopg

from fhirsync.store.engine import Database

ADMIN_DSN = os.environ.get(
    "FHIRSYNC_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)
HOST = "127.0.0.1:5432"


def create_database() -> str:
    """Create an empty database; returns its SQLAlchemy URL."""
    name = f"fhirsync_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@{HOST}/{name}"


def drop_database(url: str) -> None:
    """Drop a database made by :func:`create_database` (closing its sessions first)."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def waiting_for_a_lock(db: Database) -> bool:
    """True while a session of ``db``'s database waits for a lock another one holds (a test of
    lock order holds one transaction open until the other is seen waiting)."""
    with db.read() as conn:
        return bool(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).scalar()
        )
