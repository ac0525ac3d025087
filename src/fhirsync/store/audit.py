"""Writing the sync audit log (spec §7.1-§7.3): one row per applied or failed record.

Rows carry ids, links and the error, never record bodies (no patient data). They are inserted in
bulk inside the caller's transaction, so a page's records, its marker and its audit rows commit
together. Reading the log is ``store/audit_query.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import orjson
from sqlalchemy import Connection, update

from fhirsync.store import bulk
from fhirsync.store.tables import audit

_COLUMNS = (
    "uuid",
    "success",
    "timestamp",
    "resource_name",
    "record_uuid",
    "used_resource_url",
    "available_resource_urls",
    "parent_url",
    "local_url",
    "action",
    "details",
    "operation",
    "link_type",
    "error_class",
    "next_message_uuid",
    "creator_instance_id",
    "merge_conflict_uuid",
    "voided",
    "date_created",
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit row to write (field names of spec §7.1)."""

    success: bool
    resource_name: str
    record_uuid: str | None
    action: str
    operation: str
    details: str
    link_type: str | None = None
    used_resource_url: str | None = None
    available_resource_urls: Mapping[str, str] | None = None
    parent_url: str | None = None
    local_url: str | None = None
    creator_instance_id: str | None = None
    error_class: str | None = None
    uuid: str = ""
    timestamp: datetime | None = None
    previous_uuid: str | None = None
    """The audit row of an earlier failed attempt of the same record; linked to this one."""
    merge_conflict_uuid: str | None = None
    """The conflict this row reports (spec §6.4 ``mergeConflictUuid``)."""

    def with_uuid(self) -> AuditEntry:
        """This entry with a fresh random uuid if it has none."""
        if self.uuid:
            return self
        return replace(self, uuid=new_uuid())


def new_uuid() -> str:
    """A fresh audit row uuid (for entries built with their uuid at once)."""
    return bulk.fresh_uuid()


@dataclass(frozen=True, slots=True)
class AuditPolicy:
    """Which rows are kept (``persistSuccessAudit``/``persistFailureAudit``, spec §7.2)."""

    persist_success: bool
    persist_failure: bool

    def keeps(self, entry: AuditEntry) -> bool:
        """True when ``entry`` is to be stored."""
        return self.persist_success if entry.success else self.persist_failure


def _links_text(links: Mapping[str, str] | None) -> str | None:
    if links is None:
        return None
    return orjson.dumps(dict(links), option=orjson.OPT_INDENT_2).decode()


def insert_many(
    conn: Connection, entries: Sequence[AuditEntry], policy: AuditPolicy, *, now: datetime
) -> list[AuditEntry]:
    """Store the entries ``policy`` keeps, in one statement; link earlier attempts to them.

    Returns the stored entries (with their uuids) in input order.
    """
    kept = [e.with_uuid() for e in entries if policy.keeps(e)]
    if not kept:
        return []
    created = bulk.db_time(conn, now)
    bulk.insert_rows(
        conn,
        audit,
        _COLUMNS,
        [
            (
                e.uuid,
                e.success,
                created if e.timestamp is None else bulk.db_time(conn, e.timestamp),
                e.resource_name,
                e.record_uuid,
                e.used_resource_url,
                _links_text(e.available_resource_urls),
                e.parent_url,
                e.local_url,
                e.action,
                e.details,
                e.operation,
                e.link_type,
                e.error_class,
                None,
                e.creator_instance_id,
                e.merge_conflict_uuid,
                False,
                created,
            )
            for e in kept
        ],
    )
    for e in kept:
        if e.previous_uuid:
            link_next(conn, e.previous_uuid, e.uuid)
    return kept


def link_next(conn: Connection, old_uuid: str, new_uuid: str) -> None:
    """Record that ``new_uuid`` is the retry of ``old_uuid`` (spec §7.3 ``nextMessageUuid``)."""
    conn.execute(
        update(audit)
        .where(audit.c.uuid == old_uuid, audit.c.next_message_uuid.is_(None))
        .values(next_message_uuid=new_uuid)
    )
