"""shouldSynchronize for every action, collapsing, and dependency references."""

from __future__ import annotations

from datetime import UTC, datetime

from fhirsync import categories
from fhirsync.errors import RecordNotFound
from fhirsync.records import Action, FeedEntry, Record
from fhirsync.sync.apply import (
    Fail,
    Skip,
    Write,
    collapse,
    content_change,
    origin_of,
    references,
    state_change,
)

PATIENT = categories.get("patient")
UUID = "0b8e2e0e-1111-4222-8333-444455556666"
BODY = {"resourceType": "Patient", "id": UUID, "gender": "female"}


def _e(action: Action, origin: str | None = None) -> FeedEntry:
    return FeedEntry(f"tag:{action}", "patient", action, {"fhir": "/x"}, origin=origin)


def _local(state: str = "active") -> Record:
    return Record("patient", UUID, b"{}", 1, "h", datetime.now(UTC), state, "p")  # type: ignore[arg-type]


def test_collapse_follows_every_event_in_order() -> None:
    def final(*actions: Action) -> tuple[str, str | None, bool]:
        [change] = collapse([(PATIENT, UUID, _e(a)) for a in actions])
        return change.action, change.target_state, change.needs_fetch

    assert final("CREATED", "UPDATED") == ("UPDATED", "active", True)
    assert final("CREATED", "VOIDED") == ("VOIDED", "voided", False)
    assert final("VOIDED", "UNVOIDED") == ("UNVOIDED", "active", True)
    assert final("VOIDED", "UPDATED") == ("UPDATED", "voided", False)
    assert final("UPDATED") == ("UPDATED", None, True)
    assert final("RETIRED", "UNRETIRED", "DELETED") == ("DELETED", "deleted", False)
    two = collapse(
        [
            (PATIENT, "a", _e("CREATED")),
            (PATIENT, "b", _e("CREATED")),
            (PATIENT, "a", _e("UPDATED")),
        ]
    )
    assert [c.uuid for c in two] == ["b", "a"]


def test_state_changes_need_a_local_copy() -> None:
    [void] = collapse([(PATIENT, UUID, _e("VOIDED"))])
    assert isinstance(state_change(void, None, "parent"), Skip)
    assert isinstance(state_change(void, _local("voided"), "parent"), Skip)
    out = state_change(void, _local(), "parent")
    assert isinstance(out, Write)
    assert (out.write.body, out.write.state, out.write.via) == (None, "voided", "parent")


def test_content_changes() -> None:
    for action in ("CREATED", "UPDATED", "UNVOIDED", "UNRETIRED"):
        [change] = collapse([(PATIENT, UUID, _e(action, origin="grandchild"))])  # type: ignore[arg-type]
        out = content_change(change, BODY, None, "grandchild")
        assert isinstance(out, Write)
        assert (out.write.state, out.write.origin, out.write.uuid) == ("active", "grandchild", UUID)
    [change] = collapse([(PATIENT, UUID, _e("UPDATED"))])
    assert isinstance(content_change(change, None, None, "p"), Skip)
    failed = content_change(change, None, RecordNotFound("gone"), "p")
    assert isinstance(failed, Fail) and failed.error.uuid == UUID
    bad = content_change(change, {**BODY, "gender": "femme"}, None, "p")
    assert isinstance(bad, Fail) and type(bad.error).__name__ == "InvalidResource"
    wrong_id = content_change(change, {**BODY, "id": "other"}, None, "p")
    assert isinstance(wrong_id, Fail)


def test_rest_bodies_carry_their_state() -> None:
    concept = categories.get("concept")
    [change] = collapse([(concept, UUID, FeedEntry("t", "concept", "UPDATED", {}))])
    out = content_change(change, {"uuid": UUID, "retired": True}, None, "p")
    assert isinstance(out, Write) and out.write.state == "retired"


def test_references() -> None:
    body = {
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "http://x/ws/fhir2/R4/Encounter/e1"},
        "performer": [{"reference": "Practitioner/x"}],
        "patient": {"display": "no ref"},
    }
    assert references(body) == [(("patient",), "p1"), (("visit", "encounter"), "e1")]


def test_origin_of_a_change_from_below_is_the_parent() -> None:
    parent = "http://central:8080"
    assert origin_of(_e("UPDATED", "clinic-b"), parent, frozenset({"clinic-a"})) == "clinic-b"
    assert origin_of(_e("UPDATED"), parent) == parent  # a Java feed names no origin
    # A change from below this node came up through it: pulled back, a different body is newer.
    assert origin_of(_e("UPDATED", "clinic-a"), parent, frozenset({"clinic-a"})) == parent
