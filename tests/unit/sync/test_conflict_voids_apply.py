"""A pulled void with the parent's last body (apply.state_change) and REST If-Match checks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from fhirsync import canonical, categories
from fhirsync.errors import VersionMismatch
from fhirsync.records import Action, FeedEntry, Record, RecordState
from fhirsync.service.rest import check_if_match, entity_tag, parse_if_match
from fhirsync.sync.apply import Change, Skip, Write, collapse, state_change

PATIENT = categories.get("patient")
VISITTYPE = categories.get("visittype")
UUID = "0b8e2e0e-1111-4222-8333-444455556666"
BODY = {"resourceType": "Patient", "id": UUID, "gender": "female"}


def _change(*actions: Action) -> Change:
    entries = [
        (PATIENT, UUID, FeedEntry(f"tag:{a}", "patient", a, {"fhir": "/x"})) for a in actions
    ]
    [change] = collapse(entries)
    return change


def _local(body: Mapping[str, Any], state: RecordState = "active") -> Record:
    raw = canonical.dumps(body)
    digest = canonical.content_hash(body)
    return Record("patient", UUID, raw, 3, digest, datetime.now(UTC), state, "p")


def test_only_voids_and_retires_want_the_last_body() -> None:
    assert _change("VOIDED").wants_last_body
    assert _change("UPDATED", "VOIDED").wants_last_body
    assert not _change("DELETED").wants_last_body
    assert not _change("VOIDED", "UNVOIDED").wants_last_body


def test_a_void_with_the_parents_last_body_writes_it() -> None:
    last = {**BODY, "gender": "male"}
    outcome = state_change(_change("VOIDED"), _local(BODY), "parent", last)
    assert isinstance(outcome, Write)
    assert outcome.write.state == "voided"
    assert outcome.write.body is not None and outcome.write.body["gender"] == "male"


def test_a_void_already_held_with_that_body_is_unchanged() -> None:
    local = _local(BODY, "voided")
    assert isinstance(state_change(_change("VOIDED"), local, "parent", dict(BODY)), Skip)
    # The same state but another body: the body is taken (it reaches the reconciler).
    other = state_change(_change("VOIDED"), local, "parent", {**BODY, "gender": "other"})
    assert isinstance(other, Write) and other.write.body is not None


def test_an_invalid_last_body_leaves_a_state_only_void() -> None:
    bad = {**BODY, "gender": "femme"}
    outcome = state_change(_change("VOIDED"), _local(BODY), "parent", bad)
    assert isinstance(outcome, Write) and outcome.write.body is None
    wrong_id = {**BODY, "id": "someone-else"}
    outcome = state_change(_change("VOIDED"), _local(BODY), "parent", wrong_id)
    assert isinstance(outcome, Write) and outcome.write.body is None


def test_a_void_of_a_record_not_held_arrives_voided_with_its_body() -> None:
    # Skipped, the record never came, and an encounter of that patient waited for it for ever.
    outcome = state_change(_change("VOIDED"), None, "parent", dict(BODY))
    assert isinstance(outcome, Write)
    assert (outcome.write.state, outcome.write.body) == ("voided", BODY)
    # Without a body (a Java parent, an invalid one) there is nothing to write.
    assert isinstance(state_change(_change("VOIDED"), None, "parent", None), Skip)
    bad = {**BODY, "gender": "femme"}
    assert isinstance(state_change(_change("VOIDED"), None, "parent", bad), Skip)


def test_rest_if_match_names_a_version_or_an_entity_tag() -> None:
    record = Record("visittype", UUID, b"{}", 4, "abc", datetime.now(UTC), "active", "p")
    for tag in (None, "*", "4", entity_tag("abc", "active")):
        check_if_match(VISITTYPE, UUID, record, tag)
    for tag in ("3", entity_tag("abc", "retired"), entity_tag("old", "active")):
        with pytest.raises(VersionMismatch) as caught:
            check_if_match(VISITTYPE, UUID, record, tag)
        assert caught.value.current_version == 4
    with pytest.raises(VersionMismatch):
        check_if_match(VISITTYPE, UUID, None, "*")
    purged = Record("visittype", UUID, b"{}", 5, "abc", datetime.now(UTC), "deleted", "p")
    with pytest.raises(VersionMismatch):
        check_if_match(VISITTYPE, UUID, purged, entity_tag("abc", "deleted"))
    assert parse_if_match('W/"7"') == "7"
    assert parse_if_match(' "abc-active" ') == "abc-active"
    assert parse_if_match(None) is None and parse_if_match("  ") is None
