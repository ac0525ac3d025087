"""The commit process's wire form: a page survives pack/unpack whole."""

from __future__ import annotations

from datetime import UTC, datetime

from fhirsync.records import MarkerKey, RecordWrite
from fhirsync.store.audit import AuditEntry
from fhirsync.store.failures import FailureNote
from fhirsync.store.local import MarkerMove, PageCommit
from fhirsync.sync.commit_process import pack, unpack

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def test_a_page_survives_pack_and_unpack() -> None:
    writes = [
        RecordWrite("patient", "a", {"resourceType": "Patient", "id": "a", "active": True}, "p"),
        RecordWrite("patient", "b", None, "p", "voided", expected_version=3, via="parent"),
        RecordWrite("location", "c", {"uuid": "c", "name": "Ward", "n": 1.5}, "p", via="x"),
    ]
    audit = [
        AuditEntry(
            True,
            "patient",
            "a",
            "CREATED",
            "PULL",
            "ok",
            available_resource_urls={"fhir": "/a"},
            timestamp=NOW,
            uuid="u1",
        ),
        AuditEntry(
            False,
            "patient",
            "b",
            "VOIDED",
            "PULL",
            "bad",
            error_class="InvalidResource",
            previous_uuid="u0",
        ),
        AuditEntry(True, "location", "c", "UPDATED", "PULL", "ok", merge_conflict_uuid="m"),
    ]
    batch = PageCommit(
        "pull",
        writes=writes,
        write_audit=audit,
        audit=[AuditEntry(True, "patient", None, "RECOVERED", "PULL", "warning")],
        failures=[
            FailureNote(
                operation="pull",
                marker_key="k",
                category="patient",
                record_uuid="d",
                entry_id="e1",
                action="CREATED",
                links={"fhir": "/d"},
                error_class="InvalidResource",
                error_message="bad",
                status="retrying",
                attempts=1,
                next_retry_at=NOW,
            )
        ],
        resolved={"patient": ["a"]},
        marker=MarkerMove(MarkerKey("http://p", "patient", "h"), "entry-9", 4),
    )
    again, when = unpack(pack(batch, NOW))
    assert when == NOW
    assert list(again.writes) == writes
    assert list(again.write_audit) == audit
    assert again.audit == batch.audit
    assert again.failures == batch.failures
    assert again.resolved == batch.resolved
    assert again.marker == batch.marker
