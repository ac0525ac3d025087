"""Seeded sample data: deterministic, valid, realistic, and written with an event per record."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from fhirsync import canonical, categories
from fhirsync.service import seed
from fhirsync.service.seed import SeedRecord, generate
from fhirsync.service.seed_patients import openmrs_id
from fhirsync.service.seed_vocab import VITALS
from fhirsync.store import records
from fhirsync.store.engine import open_database
from fhirsync.store.tables import events
from fhirsync.store.tables import records as records_table

LOINC = "http://loinc.org"


def _bytes(recs: list[SeedRecord]) -> list[bytes]:
    return [canonical.dumps({"category": r.category, "uuid": r.uuid, **r.body}) for r in recs]


def test_same_seed_gives_byte_identical_records_and_another_seed_differs() -> None:
    first, again, other = list(generate(15, 7)), list(generate(15, 7)), list(generate(15, 8))
    assert _bytes(first) == _bytes(again)
    mine = {r.uuid for r in first if r.category not in ("visittype", "concept")}
    theirs = {r.uuid for r in other if r.category not in ("visittype", "concept")}
    assert not mine & theirs  # no uuid of one clinic's own records reappears in the other's
    ids = {r.body["identifier"][0]["value"] for r in first if r.category == "patient"}
    other_ids = {r.body["identifier"][0]["value"] for r in other if r.category == "patient"}
    assert len(ids) == 15 and ids != other_ids


def test_a_patient_is_the_same_whatever_the_count() -> None:
    small = [r for r in generate(3, 2) if r.category == "patient"]
    large = [r for r in generate(9, 2) if r.category == "patient"]
    assert _bytes(small) == _bytes(large[:3])


def test_every_seeded_record_validates_and_lands_in_its_category() -> None:
    recs = list(generate(25, 3))
    assert len({(r.category, r.uuid) for r in recs}) == len(recs)
    for rec in recs:
        seed.check(rec)
        if categories.get(rec.category).is_fhir:
            assert rec.body["id"] == rec.uuid
            assert categories.for_fhir_resource(rec.body).name == rec.category
    kinds = Counter(r.category for r in recs)
    assert kinds["patient"] == 25
    assert kinds["location"] >= 2 and kinds["provider"] >= 3
    assert kinds["visittype"] == 3 and kinds["concept"] == len(VITALS)
    assert kinds["visit"] > 0 and kinds["encounter"] >= kinds["visit"]
    assert kinds["observation"] >= 7 * kinds["visit"]


def test_clinical_records_reference_each_other_and_use_loinc_and_ucum() -> None:
    recs = list(generate(20, 4))
    by_cat: dict[str, dict[str, SeedRecord]] = {}
    for rec in recs:
        by_cat.setdefault(rec.category, {})[rec.uuid] = rec
    for visit in by_cat["visit"].values():
        assert visit.body["meta"]["tag"][0]["code"] == "visit"
        assert visit.body["subject"]["reference"].removeprefix("Patient/") in by_cat["patient"]
    for enc in by_cat["encounter"].values():
        assert enc.body["meta"]["tag"][0]["code"] == "encounter"
        assert enc.body["partOf"]["reference"].removeprefix("Encounter/") in by_cat["visit"]
        practitioner = enc.body["participant"][0]["individual"]["reference"]
        assert practitioner.removeprefix("Practitioner/") in by_cat["provider"]
    expected = {v.loinc: v.ucum for v in VITALS}
    seen: set[str] = set()
    for obs in by_cat["observation"].values():
        loinc = next(c for c in obs.body["code"]["coding"] if c.get("system") == LOINC)
        quantity = obs.body["valueQuantity"]
        assert quantity["system"] == "http://unitsofmeasure.org"
        assert quantity["code"] == expected[loinc["code"]]
        assert obs.body["subject"]["reference"].removeprefix("Patient/") in by_cat["patient"]
        assert obs.body["encounter"]["reference"].removeprefix("Encounter/") in by_cat["encounter"]
        seen.add(loinc["code"])
    assert seen == set(expected)
    assert {
        "8867-4",
        "8480-6",
        "8462-4",
        "8310-5",
        "29463-7",
        "8302-2",
        "9279-1",
        "59408-5",
    } == seen


def _luhn_mod30_valid(value: str) -> bool:
    chars = "0123456789ACDEFGHJKLMNPRTUVWXY"
    factor, total = 1, 0
    for char in reversed(value):
        addend = factor * chars.index(char)
        factor = 2 if factor == 1 else 1
        total += addend // 30 + addend % 30
    return total % 30 == 0


def test_openmrs_ids_carry_a_luhn_mod30_check_character() -> None:
    assert openmrs_id(30**5) == "100000Y"
    for number in (30**5, 30**5 + 1, 123_456_789, 7):
        assert _luhn_mod30_valid(openmrs_id(number))
    assert not _luhn_mod30_valid("100000X")


@pytest.mark.postgres
def test_seed_node_writes_every_record_with_its_event(
    db_url_factory: Callable[[str], str],
) -> None:
    make = db_url_factory
    moment = datetime(2025, 3, 2, 10, 0, tzinfo=UTC)
    stored: list[list[tuple[str, str, bytes, str]]] = []
    for name in ("one", "two"):
        db = open_database(make(name))
        try:
            result = seed.seed_node(db, "clinic-a", 12, 5, batch_size=100, now=moment)
            assert result.changed == sum(result.counts.values())
            with db.read() as conn:
                counts = records.counts_by_category(conn)
                assert {c: s["active"] for c, s in counts.items()} == result.counts
                per_category = Counter(
                    row.category for row in conn.execute(select(events.c.category))
                )
                assert dict(per_category) == result.counts
                rows = conn.execute(
                    select(
                        records_table.c.category,
                        records_table.c.uuid,
                        records_table.c.body,
                        records_table.c.content_hash,
                    ).order_by(records_table.c.category, records_table.c.uuid)
                )
                stored.append([(r[0], r[1], bytes(r[2]), r[3]) for r in rows])
            # Seeding again changes nothing, so it appends no event.
            assert seed.seed_node(db, "clinic-a", 12, 5).changed == 0
        finally:
            db.dispose()
    assert stored[0] == stored[1]
