"""Query plans on SQLite and PostgreSQL, for the tests that pin which index a read uses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Select, event


def plan(conn: Connection, query: Select[Any]) -> str:
    """The database's plan of ``query``, as one line of text."""
    sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
    return plan_of_sql(conn, sql)


def plan_of_sql(conn: Connection, sql: str, params: Any = None) -> str:
    """The database's plan of the driver-level statement ``sql`` with ``params``."""
    args = () if params is None else (params,)
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, *args)
        return " ".join(str(r[3]) for r in rows)
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a few rows: a scan is cheaper
    return " ".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + sql, *args))


@contextmanager
def statements(conn: Connection) -> Iterator[list[tuple[str, Any]]]:
    """Collect each statement ``conn`` sends to the driver while the block runs: (sql, params)."""
    sent: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, _many: bool) -> None:
        sent.append((sql, params))

    event.listen(conn, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(conn, "before_cursor_execute", seen)
