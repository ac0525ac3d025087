"""Dismissing a failed record by hand: it is never retried again, and the audit says who and why.

The failure is closed and an audit row (operation of the failure, ``success`` false, error class
``Dismissed``) is written in the same transaction; the failure's own audit row links to it
(``nextMessageUuid``), so the audit list shows the failed row as handled and no longer retryable.

With ``continue_on_failure`` off the push log stopped just before the failed record; the next
push passes over the event that failed (``sync/push_feed.py``) and sends the records after it. A
later change of the record is a new event and goes up as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fhirsync.errors import RecordNotFound, RequestError
from fhirsync.store import audit, failures
from fhirsync.store.audit import AuditEntry, AuditPolicy
from fhirsync.store.engine import Database

MAX_REASON = 500
ERROR_CLASS = "Dismissed"


@dataclass(frozen=True, slots=True)
class Dismissed:
    """What a dismissal did."""

    failure: failures.Failure
    audit_uuid: str


def dismiss(
    db: Database, failure_id: int, *, reason: str, user: str, instance_id: str
) -> Dismissed:
    """Close the open failure ``failure_id`` for good, recording ``reason`` and ``user``.

    RequestError when the reason is empty; RecordNotFound when no open failure has that id.
    """
    # Kept in the failure's note and an audit row, whose text PostgreSQL refuses with a NUL in
    # it (the dismissal failed with a 500): shown as error texts show one (errors.py).
    reason = " ".join(reason.split()).replace("\x00", "\\x00")
    if not reason:
        raise RequestError("Say why this failure is dismissed (the reason is kept in the audit).")
    reason = reason[:MAX_REASON]
    note = f"Dismissed by {user}: {reason}"
    now = datetime.now(UTC)
    with db.write() as conn:
        found = failures.dismiss(conn, failure_id, note)
        if found is None:
            raise RecordNotFound(f"There is no open failure #{failure_id} (already handled?).")
        entry = AuditEntry(
            success=False,
            resource_name=found.category,
            record_uuid=found.record_uuid,
            action=found.action,
            operation=found.operation.upper(),
            details=f"{note} (was: {found.error_class} after {found.attempts} tries)",
            available_resource_urls=found.links or None,
            creator_instance_id=instance_id,
            error_class=ERROR_CLASS,
            previous_uuid=found.audit_uuid,
        )
        # Always kept, whatever persistFailureAudit says: a hand-made decision must be traceable.
        (stored,) = audit.insert_many(conn, [entry], AuditPolicy(True, True), now=now)
    return Dismissed(found, stored.uuid)
