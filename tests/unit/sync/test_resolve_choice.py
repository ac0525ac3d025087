"""Choosing the resolved version of a conflict (``sync.resolve.chosen``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhirsync import canonical
from fhirsync.errors import InvalidResource
from fhirsync.store.conflicts import Conflict
from fhirsync.sync.merge import STATE_PATH
from fhirsync.sync.resolve import chosen

_NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _conflict() -> Conflict:
    def body(gender: str) -> bytes:
        return canonical.dumps({"resourceType": "Patient", "gender": gender})

    return Conflict(
        uuid="c1",
        category="patient",
        record_uuid="p1",
        status="open",
        operation="PULL",
        base_body=body("female"),
        base_state="active",
        local_body=body("other"),
        local_state="deleted",
        remote_body=body("male"),
        remote_state="active",
        remote_version="2",
        paths=("gender", STATE_PATH),
        detected_at=_NOW,
        updated_at=_NOW,
        resolved_at=None,
        resolved_by=None,
        resolution=None,
    )


def test_a_chosen_state_is_kept() -> None:
    body, state = chosen(_conflict(), choices={"gender": "male", STATE_PATH: "deleted"})
    assert (body["gender"], state) == ("male", "deleted")


def test_a_misspelt_state_is_refused_not_taken_for_active() -> None:
    # "active" for a typo of "deleted" would have undeleted the record on every node.
    with pytest.raises(InvalidResource, match="'delted'"):
        chosen(_conflict(), choices={"gender": "male", STATE_PATH: "delted"})
