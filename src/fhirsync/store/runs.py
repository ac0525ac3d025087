"""The state of each sync direction's runs (last run, outcome, scheduler backoff), for status.

Kept in the database because ``fhirsync status`` and the UI run in other processes than the one
doing the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from fhirsync.store.tables import run_state


@dataclass(frozen=True, slots=True)
class RunState:
    """What is known about one direction's runs."""

    operation: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: str | None = None
    events_read: int = 0
    applied: int = 0
    failed: int = 0
    last_error: str | None = None
    consecutive_failures: int = 0
    backoff_seconds: float | None = None
    next_run_at: datetime | None = None


def _naive(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment is not None else None


def get(conn: Connection, operation: str) -> RunState:
    """The state of ``operation`` (an empty state if it never ran)."""
    row = conn.execute(select(run_state).where(run_state.c.operation == operation)).first()
    if row is None:
        return RunState(operation)
    data = dict(row._mapping)
    for name in ("started_at", "finished_at", "next_run_at"):
        if data[name] is not None:
            data[name] = data[name].replace(tzinfo=UTC)
    return RunState(**data)


def save(conn: Connection, operation: str, **values: Any) -> None:
    """Update the given fields of ``operation``'s state (creating the row if needed)."""
    clean = {k: _naive(v) if isinstance(v, datetime) else v for k, v in values.items()}
    done = conn.execute(update(run_state).where(run_state.c.operation == operation).values(**clean))
    if done.rowcount == 0:
        defaults = {"events_read": 0, "applied": 0, "failed": 0, "consecutive_failures": 0}
        conn.execute(insert(run_state).values(operation=operation, **{**defaults, **clean}))
