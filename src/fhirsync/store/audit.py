"""Writing the sync audit log (spec §7.1-§7.3): one row per applied or failed record.

Rows carry ids, links and the error, never record bodies (no patient data). They are inserted in
bulk inside the caller's transaction, so a page's records, its marker and its audit rows commit
together. Reading the log is ``store/audit_query.py``.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson
from sqlalchemy import Connection, insert, update

from fhirsync.store.tables import audit


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
    return str(uuidlib.uuid4())


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
    moment = now.astimezone(UTC).replace(tzinfo=None)
    kept = [e.with_uuid() for e in entries if policy.keeps(e)]
    if not kept:
        return []
    conn.execute(
        insert(audit),
        [
            {
                "uuid": e.uuid,
                "success": e.success,
                "timestamp": (e.timestamp or now).astimezone(UTC).replace(tzinfo=None),
                "resource_name": e.resource_name,
                "record_uuid": e.record_uuid,
                "used_resource_url": e.used_resource_url,
                "available_resource_urls": _links_text(e.available_resource_urls),
                "parent_url": e.parent_url,
                "local_url": e.local_url,
                "action": e.action,
                "details": e.details,
                "operation": e.operation,
                "link_type": e.link_type,
                "error_class": e.error_class,
                "next_message_uuid": None,
                "creator_instance_id": e.creator_instance_id,
                "merge_conflict_uuid": e.merge_conflict_uuid,
                "voided": False,
                "date_created": moment,
            }
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
