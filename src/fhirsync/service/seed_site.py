"""The clinic of a seeded node: its REST metadata, its facility and wards, its practitioners."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fhirsync.service.seed_parts import (
    Person,
    Place,
    SeedRecord,
    display_name,
    new_uuid,
    phone,
    reference,
)
from fhirsync.service.seed_vocab import (
    FACILITIES,
    FAMILY,
    FEMALE,
    MALE,
    PLACES,
    VISIT_TYPES,
    VITALS,
    WARDS,
    shared_uuid,
)

__all__ = ["Site", "metadata_records"]

_NUMERIC = "8d4a4488-c2cc-11de-8d13-0010c6dffd0f"  # OpenMRS concept datatype "Numeric"
_MISC = "8d492774-c2cc-11de-8d13-0010c6dffd0f"  # OpenMRS concept class "Misc"
_LOCATION_TAG = "http://fhir.openmrs.org/ext/location-tag"


def metadata_records() -> Iterator[SeedRecord]:
    """The REST metadata of a seeded clinic: its visit types and vital-sign concepts."""
    for name, description in VISIT_TYPES:
        body = {"name": name, "description": description}
        yield SeedRecord("visittype", shared_uuid("visittype", name), body)
    for vital in VITALS:
        concept = {
            "names": [{"name": vital.name, "locale": "en", "conceptNameType": "FULLY_SPECIFIED"}],
            "datatype": _NUMERIC,
            "conceptClass": _MISC,
            "set": False,
            "units": vital.unit,
            "allowDecimal": True,
        }
        yield SeedRecord("concept", vital.concept_uuid, concept)


@dataclass(frozen=True, slots=True)
class Site:
    """The facility, its wards and its practitioners."""

    place: Place
    facility: SeedRecord
    wards: tuple[SeedRecord, ...]
    practitioners: tuple[SeedRecord, ...]

    @classmethod
    def make(cls, rng: random.Random, providers: int) -> Site:
        """A site drawn from ``rng``, with ``providers`` practitioners."""
        place = Place(*rng.choice(PLACES))
        name = rng.choice(FACILITIES)
        facility = _location(rng, name, place, ("Visit Location",), None)
        parent = reference("Location", facility.uuid, name)
        wards = tuple(_location(rng, ward, place, ("Login Location",), parent) for ward in WARDS)
        staff = tuple(_practitioner(rng, number, place) for number in range(providers))
        return cls(place, facility, wards, staff)

    def records(self) -> Iterator[SeedRecord]:
        """The site's records: the facility, then its wards and practitioners."""
        yield self.facility
        yield from self.wards
        yield from self.practitioners

    def ward(self, name: str) -> Person:
        """The ward called ``name``, to point a reference at."""
        rec = next(w for w in self.wards if w.body["name"] == name)
        return Person(rec.uuid, name)

    def provider(self, rng: random.Random) -> Person:
        """A practitioner drawn from ``rng``, to point a reference at."""
        rec = rng.choice(self.practitioners)
        return Person(rec.uuid, display_name(rec.body["name"][0]))


def _location(
    rng: random.Random,
    name: str,
    place: Place,
    tags: Sequence[str],
    parent: dict[str, str] | None,
) -> SeedRecord:
    uuid = new_uuid(rng)
    body: dict[str, Any] = {
        "resourceType": "Location",
        "id": uuid,
        "meta": {"tag": [{"system": _LOCATION_TAG, "code": t, "display": t} for t in tags]},
        "status": "active",
        "name": name,
        "description": f"{name}, {place.city}",
        "address": place.address(),
    }
    if parent is not None:
        body["partOf"] = parent
    return SeedRecord("location", uuid, body)


def _practitioner(rng: random.Random, number: int, place: Place) -> SeedRecord:
    uuid = new_uuid(rng)
    gender = rng.choice(("female", "male"))
    given = rng.choice(FEMALE if gender == "female" else MALE)
    family = rng.choice(FAMILY)
    role = "Nurse" if number % 3 else "Clinician"
    body: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": uuid,
        "identifier": [
            {"use": "official", "type": {"text": role}, "value": f"PRV-{number + 1:04d}"}
        ],
        "active": True,
        "name": [{"id": new_uuid(rng), "family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": phone(rng), "use": "work"}],
        "gender": gender,
        "address": [place.address(use="work")],
    }
    return SeedRecord("provider", uuid, body)
