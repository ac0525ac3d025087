"""The Bundle entries HttpPushSender writes around stored FHIR bytes (RawBody)."""

from __future__ import annotations

import orjson
import pytest

from fhirsync import canonical
from fhirsync.clients.base import OutgoingChange
from fhirsync.clients.push_http import RawBody, _entry_bytes

BODY = {"resourceType": "Patient", "id": "p-1", "gender": "male", "name": [{"family": "Ké"}]}


@pytest.mark.parametrize("base", [None, "7", 'odd"tag\\'])
def test_a_stored_body_is_spliced_into_the_same_entry_the_encoder_would_write(
    base: str | None,
) -> None:
    raw = canonical.dumps(BODY)
    change = OutgoingChange("patient", "p-1", "UPDATED", RawBody(raw), "active", base)
    entry = orjson.loads(_entry_bytes("Patient", change))
    request = {"method": "PUT", "url": "Patient/p-1"}
    if base is not None:
        request["ifMatch"] = f'W/"{base}"'
    assert entry == {"resource": BODY, "request": request}


def test_the_entry_made_ahead_is_the_one_sent_and_follows_the_base() -> None:
    body = RawBody(canonical.dumps(BODY))
    made = body.entry("Patient", "p-1", "3")
    change = OutgoingChange("patient", "p-1", "UPDATED", body, "active", "3")
    assert _entry_bytes("Patient", change) is made
    newer = OutgoingChange("patient", "p-1", "UPDATED", body, "active", "4")
    assert orjson.loads(_entry_bytes("Patient", newer))["request"]["ifMatch"] == 'W/"4"'


def test_a_body_whose_id_is_not_the_uuid_goes_through_the_encoder_with_the_uuid() -> None:
    body = RawBody(canonical.dumps({**BODY, "id": "someone-else"}))
    assert body.entry("Patient", "p-1", None) is None
    change = OutgoingChange("patient", "p-1", "UPDATED", body, "active")
    entry = orjson.loads(_entry_bytes("Patient", change))
    assert entry["resource"]["id"] == "p-1"
    assert entry["request"] == {"method": "PUT", "url": "Patient/p-1"}


def test_a_voided_record_is_a_delete_whatever_its_body() -> None:
    change = OutgoingChange("patient", "p-1", "VOIDED", RawBody(canonical.dumps(BODY)), "voided")
    assert orjson.loads(_entry_bytes("Patient", change)) == {
        "request": {"method": "DELETE", "url": "Patient/p-1"}
    }


@pytest.mark.parametrize("status", ["²00", "2⁰⁰ OK", ""])
def test_an_entry_status_that_is_no_ascii_number_is_no_answer(status: str) -> None:
    from fhirsync.clients import fhir, push_http

    # A broken or hostile remote: "²" passes str.isdigit() but not int().
    assert push_http._entry_status({"response": {"status": status}})[0] == 0
    assert fhir._entry_status({"response": {"status": status}})[0] == 0
