"""Pushed FHIR bodies travel as stored: the Bundle entry spliced from the stored bytes, and the
agreed row cut from them, are what parsing and serialising again would give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fhirsync import canonical
from fhirsync import categories as cats
from fhirsync.clients.base import OutgoingChange
from fhirsync.clients.push_http import RawBody, _bundle_entry, _entry_bytes
from fhirsync.records import Record, RecordWrite
from fhirsync.store import records as store
from fhirsync.store.engine import Database, open_database
from fhirsync.sync.push_settle import _agreed_of, _unified_stored

PATIENT = cats.get("patient")


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = open_database(f"sqlite:///{tmp_path / 'bodies.db'}")
    yield database  # type: ignore[misc]
    database.dispose()


def stored(db: Database, uuid: str, body: dict[str, Any], state: str = "active") -> Record:
    with db.write() as conn:
        store.write(conn, RecordWrite("patient", uuid, body, "me"))
        if state != "active":
            store.write(conn, RecordWrite("patient", uuid, None, "me", state=state))  # type: ignore[arg-type]
    with db.read() as conn:
        return store.get_many(conn, ["patient"], [uuid])[uuid]


BODIES: dict[str, dict[str, Any]] = {
    "plain": {"resourceType": "Patient", "name": [{"family": "Mensah"}]},
    "meta kept": {
        "resourceType": "Patient",
        "meta": {"profile": ["http://example.org/p"], "versionId": "9", "source": "#x"},
        "gender": "female",
    },
    "nested id": {
        "resourceType": "Patient",
        "id": "p-1",
        "identifier": [{"id": "p-1", "value": "123"}],
        "extension": [{"url": "http://example.org/e", "valueString": "id"}],
    },
}


@pytest.mark.parametrize("name", sorted(BODIES))
def test_agreed_row_cut_from_stored_bytes_equals_the_unified_body(db: Database, name: str) -> None:
    record = stored(db, "p-1", BODIES[name])
    assert _unified_stored(PATIENT, record) == canonical.unified_bytes(record.resource())
    agreed = _agreed_of(PATIENT, record, "3")
    assert agreed.body == canonical.unified_bytes(record.resource())
    assert (agreed.content_hash, agreed.parent_version) == (record.content_hash, "3")


def test_voided_record_cut_the_same_way(db: Database) -> None:
    record = stored(db, "p-2", BODIES["meta kept"], state="voided")
    agreed = _agreed_of(PATIENT, record, None)
    assert agreed.body == canonical.unified_bytes(record.resource())
    assert agreed.state == "voided"


def test_a_cut_the_hash_does_not_prove_falls_back_to_parsing(db: Database) -> None:
    record = stored(db, "p-3", BODIES["plain"])
    # Stored bytes whose cut cannot give the hashed body (as if the store kept something else).
    odd = Record(
        record.category,
        record.uuid,
        record.body.replace(b'"Mensah"', b'"Mensah" '),
        record.version,
        record.content_hash,
        record.last_updated,
        record.state,
        record.origin,
    )
    assert _unified_stored(PATIENT, odd) is None
    assert _agreed_of(PATIENT, odd, None).body == canonical.unified_bytes(odd.resource())


def test_non_fhir_records_are_never_cut() -> None:
    visit_type = cats.get("visittype")
    record = Record("visittype", "v1", b'{"name":"X","uuid":"v1"}', 1, "h", None, "active", "me")  # type: ignore[arg-type]
    assert _unified_stored(visit_type, record) is None


@pytest.mark.parametrize("base", [None, "4"])
def test_spliced_entry_is_the_entry_the_parsed_body_gives(db: Database, base: str | None) -> None:
    record = stored(db, "p-4", BODIES["meta kept"])
    raw = OutgoingChange("patient", "p-4", "UPDATED", RawBody(record.body), "active", base)
    parsed = OutgoingChange("patient", "p-4", "UPDATED", record.resource(), "active", base)
    assert _entry_bytes("Patient", raw) == orjson.dumps(_bundle_entry("Patient", parsed))


def test_raw_body_without_the_uuid_as_id_is_sent_parsed() -> None:
    raw = RawBody(b'{"resourceType":"Patient","id":"other"}')
    change = OutgoingChange("patient", "p-5", "UPDATED", raw, "active")
    entry = orjson.loads(_entry_bytes("Patient", change))
    assert entry["resource"] == {"resourceType": "Patient", "id": "p-5"}
    assert dict(raw) == {"resourceType": "Patient", "id": "other"}
