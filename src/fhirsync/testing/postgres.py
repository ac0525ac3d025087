"""Throw-away PostgreSQL databases on the local server (127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import os
import uuid

import psycopg

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
