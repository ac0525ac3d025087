"""Many-row inserts and updates straight through the driver: the hot rows of a page commit.

SQLAlchemy Core's executemany compiles the statement and runs every parameter of every row through
its bind processors; for a pulled record's four rows (record, event, audit, agreed) that cost
about as much as SQLite's own work. Here the SQL text is built once per table, column list and
driver, and rows go to the driver's ``executemany`` as tuples. Values must already be in the form
the driver stores: :func:`db_time` gives datetimes in the form SQLAlchemy's SQLite dialect
writes, so rows read back through Core are unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """``INSERT`` every row of ``rows`` (values in ``columns`` order) in one executemany."""
    _execute_many(conn, _insert_sql(table.name, tuple(columns), _marker(conn)), rows)


def upsert_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    keys: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Insert each row, or replace the other columns of the row with the same ``keys``.

    ``INSERT ... ON CONFLICT (keys) DO UPDATE``: the same text on SQLite (3.24+) and PostgreSQL.
    ``rows`` must not hold two rows with the same keys.
    """
    _execute_many(conn, _upsert_sql(table.name, tuple(columns), tuple(keys), _marker(conn)), rows)


def update_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    keys: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """``UPDATE table SET columns WHERE keys`` for every row (values: columns, then keys)."""
    _execute_many(conn, _update_sql(table.name, tuple(columns), tuple(keys), _marker(conn)), rows)


def db_time(conn: Connection, moment: datetime) -> datetime | str:
    """``moment`` as the driver stores a naive-UTC ``DateTime`` column.

    SQLite has no time type: SQLAlchemy writes ``YYYY-MM-DD HH:MM:SS.ffffff`` text (and parses
    exactly that back), so this writes the same; other drivers take the datetime itself.
    """
    naive = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    if conn.dialect.name == "sqlite":
        return naive.isoformat(sep=" ", timespec="microseconds")
    return naive


def random_uuids(count: int) -> list[str]:
    """``count`` random (version 4) uuids as text; one entropy read for all of them.

    ``str(uuid.uuid4())`` costs a system call and an object per uuid; a page commit needs one per
    event and audit row.
    """
    raw = os.urandom(16 * count)
    out: list[str] = []
    for start in range(0, 16 * count, 16):
        h = raw[start : start + 16].hex()
        variant = "89ab"[int(h[16], 16) & 3]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return out


def fresh_uuid() -> str:
    """One random (version 4) uuid, from a pool refilled :func:`random_uuids` at a time."""
    while True:
        try:
            return _POOL.pop()
        except IndexError:  # empty (another thread may have taken the last one): refill
            _POOL.extend(random_uuids(_POOL_SIZE))


_POOL_SIZE = 512
_POOL: list[str] = []
# A forked process must not hand out the uuids its parent will hand out too.
os.register_at_fork(after_in_child=_POOL.clear)


def placeholders(conn: Connection, count: int) -> str:
    """``count`` bound-parameter markers of the connection's driver, comma-separated."""
    return ", ".join([_marker(conn)] * count)


def _execute_many(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        conn.exec_driver_sql(sql, list(rows))


def _marker(conn: Connection) -> str:
    # sqlite3 takes qmark parameters; psycopg takes %s for positional ones.
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


@lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...], marker: str) -> str:
    names = ", ".join(columns)
    values = ", ".join([marker] * len(columns))
    return f"INSERT INTO {table} ({names}) VALUES ({values})"


@lru_cache(maxsize=64)
def _update_sql(table: str, columns: tuple[str, ...], keys: tuple[str, ...], marker: str) -> str:
    sets = ", ".join(f"{c} = {marker}" for c in columns)
    where = " AND ".join(f"{k} = {marker}" for k in keys)
    return f"UPDATE {table} SET {sets} WHERE {where}"


@lru_cache(maxsize=64)
def _upsert_sql(table: str, columns: tuple[str, ...], keys: tuple[str, ...], marker: str) -> str:
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    conflict = ", ".join(keys)
    return f"{_insert_sql(table, columns, marker)} ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
