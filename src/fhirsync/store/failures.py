"""Failed records of a sync direction: retried with backoff, waiting for a dependency, or parked.

One open row per (operation, category, record). Status values:

- ``retrying``: retried automatically when ``next_retry_at`` has passed;
- ``waiting``: depends on another record (``depends_on``) that is absent or failed; retried when it
  arrives, never parked for it;
- ``parked``: gave up after the configured attempts; retried only by hand (``audit retry``);
- ``resolved``: a later attempt (or a later event for the same record) succeeded;
- ``dismissed``: an administrator gave up on it, with a reason (kept in ``note`` and the audit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson
from sqlalchemy import Connection, case, func, insert, select, update

from fhirsync.store.tables import MAX_ROW_ID, failures

FailureStatus = Literal["retrying", "waiting", "parked", "resolved", "dismissed"]
OPEN: tuple[FailureStatus, ...] = ("retrying", "waiting", "parked")
MESSAGE_MAX = 4000
"""The longest error message kept."""


@dataclass(frozen=True, slots=True)
class FailureNote:
    """A failed attempt to record: what failed, why, and what happens next."""

    operation: str
    marker_key: str
    category: str
    record_uuid: str
    entry_id: str
    action: str
    links: dict[str, str]
    error_class: str
    error_message: str
    status: FailureStatus
    attempts: int
    next_retry_at: datetime | None = None
    depends_on: str | None = None
    audit_uuid: str | None = None
    origin: str | None = None
    """Where the failed change began, as its feed entry said (pull; None: not said)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure(FailureNote):
    """One failed record as stored: the latest note (no patient data), its row id and times."""

    id: int
    first_failed_at: datetime
    last_failed_at: datetime

    def awaits_retry(self, now: datetime) -> bool:
        """True while only its retry time (or a person) is to try it again: parked, or
        retrying before ``next_retry_at``."""
        if self.status == "retrying":
            return self.next_retry_at is not None and self.next_retry_at > now
        return self.status == "parked"


def _naive(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment is not None else None


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None else None


def _failure(row: object) -> Failure:
    r = row._mapping  # type: ignore[attr-defined]
    return Failure(
        id=r["id"],
        operation=r["operation"],
        marker_key=r["marker_key"],
        category=r["category"],
        record_uuid=r["record_uuid"],
        entry_id=r["entry_id"],
        action=r["action"],
        links=orjson.loads(r["links"]),
        error_class=r["error_class"],
        error_message=r["error_message"],
        attempts=r["attempts"],
        status=r["status"],
        first_failed_at=r["first_failed_at"].replace(tzinfo=UTC),
        last_failed_at=r["last_failed_at"].replace(tzinfo=UTC),
        next_retry_at=_aware(r["next_retry_at"]),
        depends_on=r["depends_on"],
        audit_uuid=r["audit_uuid"],
        origin=r["origin"],
    )


def open_for(
    conn: Connection, operation: str, category: str, uuids: Iterable[str]
) -> dict[str, Failure]:
    """Open failures of ``category`` for the given record uuids, by uuid."""
    wanted = list(dict.fromkeys(uuids))
    out: dict[str, Failure] = {}
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            select(failures).where(
                failures.c.operation == operation,
                failures.c.category == category,
                failures.c.status.in_(OPEN),
                failures.c.record_uuid.in_(wanted[start : start + 500]),
            )
        )
        out.update({row.record_uuid: _failure(row) for row in rows})
    return out


def record(conn: Connection, notes: Sequence[FailureNote], *, now: datetime) -> None:
    """Insert or update the open failure of each noted record (one open row per record)."""
    moment = _naive(now)
    by_cat: dict[tuple[str, str], list[FailureNote]] = {}
    for note in notes:
        by_cat.setdefault((note.operation, note.category), []).append(note)
    for (operation, category), group in by_cat.items():
        existing = open_for(conn, operation, category, [n.record_uuid for n in group])
        for note in group:
            values = {
                "marker_key": note.marker_key,
                "entry_id": note.entry_id,
                "action": note.action,
                "links": orjson.dumps(dict(note.links)).decode(),
                "error_class": note.error_class,
                "error_message": note.error_message[:MESSAGE_MAX],
                "attempts": note.attempts,
                "status": note.status,
                "last_failed_at": moment,
                "next_retry_at": _naive(note.next_retry_at),
                "depends_on": note.depends_on,
                "audit_uuid": note.audit_uuid,
                "origin": note.origin,
            }
            old = existing.get(note.record_uuid)
            if old is None:
                conn.execute(
                    insert(failures).values(
                        operation=operation,
                        category=category,
                        record_uuid=note.record_uuid,
                        first_failed_at=moment,
                        **values,
                    )
                )
            else:
                conn.execute(update(failures).where(failures.c.id == old.id).values(**values))


def dismissed_for(
    conn: Connection, operation: str, category: str, entries: Mapping[str, str]
) -> set[str]:
    """The records among ``entries`` (uuid → the entry id of the event that asks for it now)
    whose failure for that very event an administrator dismissed (a later event is a new
    change, not dismissed)."""
    wanted = list(entries)
    out: set[str] = set()
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            select(failures.c.record_uuid, failures.c.entry_id).where(
                failures.c.operation == operation,
                failures.c.category == category,
                failures.c.status == "dismissed",
                failures.c.record_uuid.in_(wanted[start : start + 500]),
            )
        )
        out.update(str(u) for u, entry_id in rows if entries.get(str(u)) == entry_id)
    return out


def resolve(conn: Connection, operation: str, category: str, uuids: Iterable[str]) -> list[Failure]:
    """Mark the open failures of these records resolved; returns the rows that were open."""
    found = open_for(conn, operation, category, uuids)
    if found:
        conn.execute(
            update(failures)
            .where(failures.c.id.in_([f.id for f in found.values()]))
            .values(status="resolved", next_retry_at=None)
        )
    return list(found.values())


def due(conn: Connection, operation: str, category: str, *, now: datetime) -> list[Failure]:
    """Failures of ``category`` to retry now: ``retrying`` ones whose time has come, and every
    ``waiting`` one (few; the dependency check sends them back to waiting if still unmet)."""
    rows = conn.execute(
        select(failures)
        .where(
            failures.c.operation == operation,
            failures.c.category == category,
            failures.c.status.in_(("retrying", "waiting")),
        )
        .order_by(failures.c.id)
    )
    out: list[Failure] = []
    for f in (_failure(r) for r in rows):
        if f.status == "retrying":
            if f.next_retry_at is None or f.next_retry_at <= now:
                out.append(f)
        else:
            out.append(f)
    return out


def waiting_on(conn: Connection, operation: str) -> list[Failure]:
    """Every ``waiting`` failure of ``operation``."""
    rows = conn.execute(
        select(failures).where(failures.c.operation == operation, failures.c.status == "waiting")
    )
    return [_failure(r) for r in rows]


def get(conn: Connection, failure_id: int) -> Failure | None:
    """One failure by id (any status)."""
    if not 0 < failure_id <= MAX_ROW_ID:
        return None
    row = conn.execute(select(failures).where(failures.c.id == failure_id)).first()
    return _failure(row) if row is not None else None


def status_by_audit(conn: Connection, audit_uuids: Iterable[str]) -> dict[str, FailureStatus]:
    """The status of the failure each of these audit rows reported (its latest attempt), by
    audit uuid; rows that reported no failure are left out."""
    wanted = list(dict.fromkeys(audit_uuids))
    out: dict[str, FailureStatus] = {}
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            select(failures.c.audit_uuid, failures.c.status).where(
                failures.c.audit_uuid.in_(wanted[start : start + 500])
            )
        )
        out.update({str(uuid): status for uuid, status in rows})
    return out


def list_open(
    conn: Connection, operation: str | None = None, status: FailureStatus | None = None
) -> list[Failure]:
    """Open failures (optionally of one operation and status), oldest first."""
    query = select(failures).where(failures.c.status.in_(OPEN))
    if operation:
        query = query.where(failures.c.operation == operation)
    if status:
        query = query.where(failures.c.status == status)
    return [_failure(r) for r in conn.execute(query.order_by(failures.c.id))]


def for_review(conn: Connection, limit: int, operation: str | None = None) -> list[Failure]:
    """At most ``limit`` open failures as a person reviews them: parked first (they need
    someone), newest first within each status. Pages and commands show these, not every row:
    a broken category can park tens of thousands."""
    query = select(failures).where(failures.c.status.in_(OPEN))
    if operation:
        query = query.where(failures.c.operation == operation)
    parked_first = case((failures.c.status == "parked", 0), else_=1)
    query = query.order_by(parked_first, failures.c.last_failed_at.desc(), failures.c.id.desc())
    return [_failure(r) for r in conn.execute(query.limit(limit))]


def open_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """Open failures by (operation, status), counted by the database."""
    rows = conn.execute(
        select(failures.c.operation, failures.c.status, func.count())
        .where(failures.c.status.in_(OPEN))
        .group_by(failures.c.operation, failures.c.status)
    )
    return {(str(op), str(status)): int(n) for op, status, n in rows}


def requeue(conn: Connection, ids: Sequence[int] | None = None) -> int:
    """Put parked failures (all, or those ids) back to ``retrying`` now with a fresh count."""
    stmt = update(failures).where(failures.c.status == "parked")
    if ids is not None:
        stmt = stmt.where(failures.c.id.in_(list(ids)))
    result = conn.execute(stmt.values(status="retrying", next_retry_at=None, attempts=0))
    return int(result.rowcount)


def counts(conn: Connection, operation: str) -> dict[str, int]:
    """Open failures of ``operation`` by status."""
    rows = conn.execute(
        select(failures.c.status, func.count())
        .where(failures.c.operation == operation, failures.c.status.in_(OPEN))
        .group_by(failures.c.status)
    )
    return {str(s): int(n) for s, n in rows}


def dismiss(conn: Connection, failure_id: int, note: str) -> Failure | None:
    """Close one open failure by hand (``dismissed``, never retried again), keeping ``note``.

    Returns the failure as it was while open, or None when there is no open failure with that id.
    A later failure of the same record opens a new row.
    """
    found = get(conn, failure_id)
    if found is None or found.status not in OPEN:
        return None
    conn.execute(
        update(failures)
        .where(failures.c.id == failure_id)
        .values(status="dismissed", next_retry_at=None, note=note[:2000])
    )
    return found


def due_now(conn: Connection, ids: Sequence[int]) -> int:
    """Make these open failures due at once: parked ones get a fresh count (as :func:`requeue`),
    retrying ones lose their wait. Waiting ones are left alone (they wait for a record)."""
    if not ids:
        return 0
    requeue(conn, ids)
    # Requeued rows are ``retrying`` now too, so this counts every row made due.
    result = conn.execute(
        update(failures)
        .where(failures.c.id.in_(list(ids)), failures.c.status == "retrying")
        .values(next_retry_at=None)
    )
    return int(result.rowcount)
