"""Reading the audit log (spec §7): filtered pages newest first, summaries, retention cleanup.

The sync engine writes audit rows (``store/audit.py``); this module answers the questions the admin
pages, ``/ws/rest/sync2/messages`` and ``/metrics`` ask of them. It also holds the few writes that
the Sync 2.0 REST endpoints make on behalf of a remote caller (create, update, void one message).
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from fhirsync.store.failures import OPEN
from fhirsync.store.tables import MAX_ROW_ID, OPEN_FAILURE, audit, failures


@dataclass(frozen=True, slots=True)
class AuditMessage:
    """One audit row, with the field names of spec §7.1 (timestamps are naive UTC)."""

    id: int | None
    uuid: str
    success: bool
    timestamp: datetime
    resource_name: str | None = None
    record_uuid: str | None = None
    used_resource_url: str | None = None
    available_resource_urls: str | None = None
    parent_url: str | None = None
    local_url: str | None = None
    action: str | None = None
    details: str | None = None
    operation: str | None = None
    link_type: str | None = None
    error_class: str | None = None
    next_message_uuid: str | None = None
    creator_instance_id: str | None = None
    merge_conflict_uuid: str | None = None
    voided: bool = False
    date_created: datetime | None = None


_COLUMNS = tuple(f.name for f in fields(AuditMessage))


def now_utc() -> datetime:
    """The current time as the naive UTC the audit table stores."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def naive_utc(moment: datetime) -> datetime:
    """``moment`` as naive UTC (aware values are converted; naive ones are taken as UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which rows to list; None means "any". Voided rows are never listed (spec §7.4)."""

    success: bool | None = None
    operation: str | None = None
    resource_name: str | None = None
    creator_instance_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    record_uuid: str | None = None
    up_to_id: int | None = None
    """Only rows that existed when a listing began (ids grow): its later pages then neither
    repeat nor skip rows when new messages arrive."""
    still_to_handle: bool = False
    """Only failed messages that still need someone (:func:`still_failed`)."""

    def where(self) -> list[Any]:
        """SQL conditions for this filter."""
        cond: list[Any] = [audit.c.voided.is_(False)]
        if self.success is not None:
            cond.append(audit.c.success.is_(self.success))
        if self.operation:
            cond.append(func.upper(audit.c.operation) == self.operation.upper())
        if self.resource_name:
            cond.append(func.lower(audit.c.resource_name) == self.resource_name.lower())
        if self.creator_instance_id:
            cond.append(audit.c.creator_instance_id == self.creator_instance_id)
        if self.since is not None:
            cond.append(audit.c.timestamp >= naive_utc(self.since))
        if self.until is not None:
            cond.append(audit.c.timestamp < naive_utc(self.until))
        if self.record_uuid:
            cond.append(audit.c.record_uuid == self.record_uuid)
        if self.up_to_id is not None:
            cond.append(audit.c.id <= min(self.up_to_id, MAX_ROW_ID))
        if self.still_to_handle:
            cond.extend(still_failed())
        return cond


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of a filtered listing (``page`` is 1-based)."""

    total: int
    page: int
    page_size: int
    items: list[AuditMessage]

    @property
    def page_count(self) -> int:
        """How many pages the whole listing has (at least 1)."""
        return max(1, -(-self.total // self.page_size))


def _message(row: Any) -> AuditMessage:
    data = row._mapping
    return AuditMessage(**{name: data[name] for name in _COLUMNS})


def list_messages(
    conn: Connection, flt: AuditFilter, *, page: int = 1, page_size: int = 100
) -> AuditPage:
    """A page of matching messages, newest first (ties broken by id, newest first)."""
    page = max(1, page)
    page_size = max(1, page_size)
    cond = and_(*flt.where())
    total = int(conn.execute(select(func.count()).select_from(audit).where(cond)).scalar_one())
    offset = (page - 1) * page_size
    if offset >= total:
        # Past the end: nothing to read, and a page number from a hand-made URL may not even
        # fit the database's integers.
        return AuditPage(total=total, page=page, page_size=page_size, items=[])
    query: Select[Any] = (
        select(audit)
        .where(cond)
        .order_by(audit.c.timestamp.desc(), audit.c.id.desc())
        .limit(page_size)
        .offset(offset)
    )
    items = [_message(r) for r in conn.execute(query)]
    return AuditPage(total=total, page=page, page_size=page_size, items=items)


def _retryable(flt: AuditFilter, creator: str) -> list[Any]:
    """Failed rows of ``creator`` matching ``flt`` that a retry can follow up."""
    return [
        *replace(flt, success=False).where(),
        audit.c.creator_instance_id == creator,
        audit.c.next_message_uuid.is_(None),
        # A dismissal is recorded as a failed row, but there is nothing left to retry.
        or_(audit.c.error_class.is_(None), audit.c.error_class != "Dismissed"),
        # So is a conflict: a person resolves it; a retry would only count it as failed again.
        audit.c.merge_conflict_uuid.is_(None),
    ]


def failed_messages(
    conn: Connection, flt: AuditFilter, creator: str, *, after_id: int = 0, limit: int = 1000
) -> list[AuditMessage]:
    """At most ``limit`` retryable failures matching ``flt`` (made by ``creator``, not yet
    followed up, neither a dismissal nor a conflict) with ids above ``after_id``, by id: pass the
    last id back to read the next ones."""
    cond = [*_retryable(flt, creator), audit.c.id > after_id]
    query = select(audit).where(*cond).order_by(audit.c.id).limit(limit)
    return [_message(r) for r in conn.execute(query)]


def follow_up_success(conn: Connection, uuids: list[str]) -> dict[str, bool]:
    """Whether the message following up each of these (``nextMessageUuid``) succeeded, by uuid;
    messages nothing follows up are left out."""
    later = audit.alias("later")
    out: dict[str, bool] = {}
    for start in range(0, len(uuids), 500):
        query = (
            select(audit.c.uuid, later.c.success)
            .join(later, later.c.uuid == audit.c.next_message_uuid)
            .where(audit.c.uuid.in_(uuids[start : start + 500]))
        )
        out.update({str(uuid): bool(success) for uuid, success in conn.execute(query)})
    return out


def conflicts_since(conn: Connection, after_id: int, operation: str) -> int:
    """How many conflicts ``operation`` kept for a person in rows after ``after_id`` (a run's
    own conflicts, when ``after_id`` is :func:`last_id` at its start)."""
    query = (
        select(func.count())
        .select_from(audit)
        .where(
            audit.c.id > after_id,
            audit.c.action == "CONFLICT",
            func.upper(audit.c.operation) == operation.upper(),
        )
    )
    return int(conn.execute(query).scalar_one())


def last_id(conn: Connection) -> int:
    """The id of the newest stored row (0 when there is none)."""
    return int(conn.execute(select(func.max(audit.c.id))).scalar_one() or 0)


def get_message(conn: Connection, uuid: str) -> AuditMessage | None:
    """The message with ``uuid`` (voided or not), or None."""
    row = conn.execute(select(audit).where(audit.c.uuid == uuid)).first()
    return _message(row) if row is not None else None


def previous_message(conn: Connection, uuid: str) -> AuditMessage | None:
    """The message whose retry produced ``uuid`` (its ``nextMessageUuid`` points here), or None."""
    row = conn.execute(select(audit).where(audit.c.next_message_uuid == uuid)).first()
    return _message(row) if row is not None else None


def origins(conn: Connection) -> list[str]:
    """Every distinct creator instance id present, sorted."""
    query = (
        select(audit.c.creator_instance_id)
        .distinct()
        .where(audit.c.creator_instance_id.isnot(None))
    )
    return sorted(str(v) for v in conn.execute(query).scalars())


def resource_names(conn: Connection) -> list[str]:
    """Every distinct resource name (category) present, sorted."""
    query = select(audit.c.resource_name).distinct().where(audit.c.resource_name.isnot(None))
    return sorted(str(v) for v in conn.execute(query).scalars())


def latest(conn: Connection, operation: str) -> AuditMessage | None:
    """The newest non-voided message of ``operation`` (PULL or PUSH), or None."""
    row = conn.execute(
        select(audit)
        .where(audit.c.voided.is_(False), func.upper(audit.c.operation) == operation.upper())
        .order_by(audit.c.timestamp.desc(), audit.c.id.desc())
        .limit(1)
    ).first()
    return _message(row) if row is not None else None


@dataclass(frozen=True, slots=True)
class Bucket:
    """Counts of one time bucket of the activity chart."""

    start: datetime
    succeeded: int
    failed: int


def activity(
    conn: Connection, *, since: datetime, step: timedelta, until: datetime
) -> list[Bucket]:
    """Successes and failures per ``step`` from ``since`` to ``until`` (empty buckets included).

    Grouping happens here rather than in SQL because SQLite and PostgreSQL truncate dates
    differently; only two small columns of the window are read.
    """
    since, until = naive_utc(since), naive_utc(until)
    count = max(1, int((until - since) / step) + 1)
    succeeded = [0] * count
    failed = [0] * count
    query = select(audit.c.timestamp, audit.c.success).where(
        audit.c.voided.is_(False), audit.c.timestamp >= since, audit.c.timestamp < until + step
    )
    for ts, ok in conn.execute(query):
        index = min(count - 1, int((ts - since) / step))
        if ok:
            succeeded[index] += 1
        else:
            failed[index] += 1
    return [Bucket(since + i * step, succeeded[i], failed[i]) for i in range(count)]


def counts_by_category(conn: Connection, *, success: bool) -> dict[str, int]:
    """Non-voided messages per resource name with the given outcome."""
    query = (
        select(audit.c.resource_name, func.count())
        .where(audit.c.voided.is_(False), audit.c.success.is_(success))
        .group_by(audit.c.resource_name)
    )
    return {str(name or ""): int(n) for name, n in conn.execute(query)}


def counts_by_operation(conn: Connection) -> dict[tuple[str, bool], int]:
    """Non-voided messages per (operation upper-cased, success)."""
    query = (
        select(func.upper(audit.c.operation), audit.c.success, func.count())
        .where(audit.c.voided.is_(False))
        .group_by(func.upper(audit.c.operation), audit.c.success)
    )
    return {(str(op or ""), bool(ok)): int(n) for op, ok, n in conn.execute(query)}


def still_failed() -> list[Any]:
    """Conditions of a failed message that still needs someone: :data:`OPEN_FAILURE` (not
    retried since, not a dismissal, not a conflict, not voided), and the failure it reported
    not closed since. With ``persistSuccessAudit`` off a retry that worked stores no row to
    link the failed one to; only its failure says it was resolved."""
    closed = select(failures.c.id).where(
        failures.c.audit_uuid == audit.c.uuid, failures.c.status.not_in(OPEN)
    )
    return [OPEN_FAILURE, ~exists(closed)]


def open_failures_by_category(conn: Connection) -> dict[str, int]:
    """Failed messages that still need someone (:func:`still_failed`), per resource name."""
    query = (
        select(audit.c.resource_name, func.count())
        .where(*still_failed())
        .group_by(audit.c.resource_name)
    )
    return {str(name or ""): int(n) for name, n in conn.execute(query)}


def delete_older_than(conn: Connection, cutoff: datetime) -> int:
    """Retention: delete messages whose timestamp is before ``cutoff``; returns how many.

    The message an open failure links to is kept however old: a record parked for months
    still needs its reason and its Retry on the audit page.
    """
    still_open = select(failures.c.audit_uuid).where(
        failures.c.status.in_(OPEN), failures.c.audit_uuid.isnot(None)
    )
    result = conn.execute(
        delete(audit).where(audit.c.timestamp < naive_utc(cutoff), audit.c.uuid.not_in(still_open))
    )
    return int(result.rowcount or 0)


def apply_retention(conn: Connection, days: int, *, now: datetime | None = None) -> int:
    """Delete messages older than ``days`` days; returns how many."""
    return delete_older_than(conn, naive_utc(now or now_utc()) - timedelta(days=days))


# Writes made by the Sync 2.0 REST endpoints for a remote caller (spec §10).


def insert_message(conn: Connection, message: AuditMessage) -> AuditMessage:
    """Store ``message`` as given (its ``id`` is ignored); returns it with the new id."""
    values = {name: getattr(message, name) for name in _COLUMNS if name != "id"}
    values["date_created"] = message.date_created or now_utc()
    values["timestamp"] = naive_utc(message.timestamp)
    values["uuid"] = message.uuid or str(uuidlib.uuid4())
    new_id = conn.execute(insert(audit).values(**values)).inserted_primary_key
    return replace(message, id=int(new_id[0]) if new_id else None, uuid=values["uuid"])


def update_message(conn: Connection, message: AuditMessage) -> AuditMessage:
    """Overwrite the stored message with ``message``'s uuid (id and creation date kept)."""
    values = {
        name: getattr(message, name)
        for name in _COLUMNS
        if name not in ("id", "uuid", "date_created")
    }
    conn.execute(update(audit).where(audit.c.uuid == message.uuid).values(**values))
    stored = get_message(conn, message.uuid)
    assert stored is not None
    return stored


def void_message(conn: Connection, uuid: str) -> AuditMessage | None:
    """Soft-delete (void) one message; None if it does not exist."""
    conn.execute(update(audit).where(audit.c.uuid == uuid).values(voided=True))
    return get_message(conn, uuid)
