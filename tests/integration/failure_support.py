"""Failed records as the engine leaves them, for the tests of the admin pages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fhirsync.store import audit, failures
from fhirsync.store.audit import AuditEntry, AuditPolicy
from fhirsync.store.failures import FailureNote
from fhirsync.testing.servers import NodeHandle


def parked_failure(node: NodeHandle, operation: str) -> tuple[int, str]:
    """A parked failure of ``operation`` and its audit message: (failure id, message uuid)."""
    record = str(uuid.uuid4())
    entry = AuditEntry(
        success=False,
        resource_name="patient",
        record_uuid=record,
        action="CREATED",
        operation=operation.upper(),
        details="refused",
        creator_instance_id=node.instance_id,
        error_class="RemoteRejected",
    )
    _config, db = node.open()
    try:
        with db.write() as conn:
            (message,) = audit.insert_many(
                conn, [entry], AuditPolicy(True, True), now=datetime.now(UTC)
            )
            note = FailureNote(
                operation, "marker", "patient", record, "tag:1", "CREATED", {},
                "RemoteRejected", "refused", "parked", 3, audit_uuid=message.uuid,
            )  # fmt: skip
            failures.record(conn, [note], now=datetime.now(UTC))
            [found] = failures.for_review(conn, 10)
    finally:
        db.dispose()
    return found.id, message.uuid
