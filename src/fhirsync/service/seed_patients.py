"""The patients of a seeded node and their care: visits, encounters and vital-sign Observations.

A patient has an OpenMRS ID (Luhn mod-30 check character), names, address, phone, gender and birth
date. A visit is an Encounter tagged ``visit``, with a Vitals encounter and often a Visit Note
encounter (tagged ``encounter``, ``partOf`` the visit); vital signs carry LOINC codes and UCUM
units and reference the patient and the encounter.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhirsync.categories import ENCOUNTER_TAG_SYSTEM
from fhirsync.service.seed_parts import (
    Person,
    Place,
    SeedRecord,
    display_name,
    new_uuid,
    phone,
    reference,
)
from fhirsync.service.seed_site import Site
from fhirsync.service.seed_vocab import (
    CLOCK,
    ENCOUNTER_TYPES,
    FAMILY,
    FEMALE,
    MALE,
    PLACES,
    STREETS,
    VISIT_TYPES,
    VITALS,
    Vital,
    shared_uuid,
)

__all__ = ["openmrs_id", "patient_records"]

_OPENMRS_ID_TYPE = "05a29f94-c0ed-11e2-94be-8c13b969e334"
_OPENMRS_ID_CHARS = "0123456789ACDEFGHJKLMNPRTUVWXY"
_UCUM = "http://unitsofmeasure.org"


def openmrs_id(number: int) -> str:
    """An OpenMRS ID: ``number`` in base 30 (OpenMRS's alphabet) and a Luhn mod-30 check."""
    chars, base = _OPENMRS_ID_CHARS, len(_OPENMRS_ID_CHARS)
    digits = ""
    while True:
        number, remainder = divmod(number, base)
        digits = chars[remainder] + digits
        if number == 0:
            break
    return digits + _luhn_mod30(digits)


def _luhn_mod30(text: str) -> str:
    chars, base = _OPENMRS_ID_CHARS, len(_OPENMRS_ID_CHARS)
    factor, total = 2, 0
    for char in reversed(text):
        addend = factor * chars.index(char)
        factor = 1 if factor == 2 else 2
        total += addend // base + addend % base
    return chars[(base - total % base) % base]


def patient_records(rng: random.Random, site: Site, seed: int, number: int) -> Iterator[SeedRecord]:
    """Patient ``number`` of ``seed`` and its visits, each with its encounters and vital signs."""
    patient = _patient(rng, site, seed, number)
    yield patient
    person = Person(patient.uuid, display_name(patient.body["name"][0]))
    born = date.fromisoformat(patient.body["birthDate"])
    visits = rng.choices((0, 1, 2, 3), weights=(1, 4, 3, 2))[0]
    starts = sorted(
        CLOCK - timedelta(minutes=rng.randint(60, 730 * 24 * 60)) for _ in range(visits)
    )
    for day in starts:
        start = day.replace(hour=rng.randint(8, 15), second=0, microsecond=0)
        yield from _visit_records(rng, site, person, born, start)


def _patient(rng: random.Random, site: Site, seed: int, number: int) -> SeedRecord:
    uuid = new_uuid(rng)
    gender = rng.choices(("female", "male"), weights=(52, 48))[0]
    names = FEMALE if gender == "female" else MALE
    given = [rng.choice(names)] + ([rng.choice(names)] if rng.random() < 0.3 else [])
    born = CLOCK.date() - timedelta(days=rng.randint(30, 85 * 365))
    place = Place(*rng.choice(PLACES))
    registration = site.ward("Registration Desk")
    identifier = {
        "id": new_uuid(rng),
        "extension": [
            {
                "url": "http://fhir.openmrs.org/ext/patient/identifier#location",
                "valueReference": reference("Location", registration.uuid, registration.display),
            }
        ],
        "use": "official",
        "type": {"coding": [{"code": _OPENMRS_ID_TYPE}], "text": "OpenMRS ID"},
        # Offset by the seed so two seeds give different ids; ``number`` keeps them unique.
        "value": openmrs_id(30**5 + (seed * 7919 + number) % (30**6 - 30**5)),
    }
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": uuid,
        "identifier": [identifier],
        "active": True,
        "name": [{"id": new_uuid(rng), "family": rng.choice(FAMILY), "given": given}],
        "telecom": [{"id": new_uuid(rng), "system": "phone", "value": phone(rng), "use": "mobile"}],
        "gender": gender,
        "birthDate": born.isoformat(),
        "address": [
            {
                "id": new_uuid(rng),
                **place.address(f"{rng.randint(1, 400)} {rng.choice(STREETS)}", use="home"),
            }
        ],
    }
    return SeedRecord("patient", uuid, body)


def _visit_records(
    rng: random.Random, site: Site, patient: Person, born: date, start: datetime
) -> Iterator[SeedRecord]:
    visit_uuid = new_uuid(rng)
    visit_type = rng.choices(VISIT_TYPES, weights=(8, 1, 1))[0][0]
    end = start + timedelta(minutes=rng.randint(30, 240))
    clinic = site.ward("Outpatient Clinic")
    body = _encounter_head(
        visit_uuid,
        ("visit", "Visit"),
        ("visit-type", shared_uuid("visittype", visit_type), visit_type),
    )
    body["subject"] = reference("Patient", patient.uuid, patient.display)
    facility = reference("Location", site.facility.uuid, site.facility.body["name"])
    body["location"] = [{"location": facility}]
    body["period"] = {"start": _instant(start), "end": _instant(end)}
    yield SeedRecord("visit", visit_uuid, body)
    vitals_at = start + timedelta(minutes=rng.randint(5, 25))
    vitals = _encounter(rng, site, patient, visit_uuid, "Vitals", vitals_at, clinic)
    yield vitals
    yield from _observations(rng, patient, vitals.uuid, born, vitals_at)
    if rng.random() < 0.6:
        note_at = min(end, vitals_at + timedelta(minutes=rng.randint(10, 60)))
        yield _encounter(rng, site, patient, visit_uuid, "Visit Note", note_at, clinic)


def _encounter_head(uuid: str, tag: tuple[str, str], kind: tuple[str, str, str]) -> dict[str, Any]:
    """What a visit and an encounter share: id, tag, status, class and ``kind`` (the OpenMRS
    code system's last part, the type's code and its display)."""
    system, code, display = kind
    return {
        "resourceType": "Encounter",
        "id": uuid,
        "meta": {"tag": [{"system": ENCOUNTER_TAG_SYSTEM, "code": tag[0], "display": tag[1]}]},
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
            "display": "ambulatory",
        },
        "type": [
            {
                "coding": [
                    {
                        "system": f"http://fhir.openmrs.org/code-system/{system}",
                        "code": code,
                        "display": display,
                    }
                ]
            }
        ],
    }


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _encounter(
    rng: random.Random,
    site: Site,
    patient: Person,
    visit_uuid: str,
    kind: str,
    at: datetime,
    where: Person,
) -> SeedRecord:
    uuid = new_uuid(rng)
    provider = site.provider(rng)
    type_code = shared_uuid("encountertype", ENCOUNTER_TYPES[kind])
    body = _encounter_head(uuid, ("encounter", "Encounter"), ("encounter-type", type_code, kind))
    body["subject"] = reference("Patient", patient.uuid, patient.display)
    body["participant"] = [
        {"individual": reference("Practitioner", provider.uuid, provider.display)}
    ]
    body["partOf"] = reference("Encounter", visit_uuid)
    body["location"] = [{"location": reference("Location", where.uuid, where.display)}]
    body["period"] = {"start": _instant(at)}
    return SeedRecord("encounter", uuid, body)


def _observations(
    rng: random.Random, patient: Person, encounter_uuid: str, born: date, at: datetime
) -> Iterator[SeedRecord]:
    age = max(0.1, (at.date() - born).days / 365.25)
    values = _vital_values(rng, age)
    for vital in VITALS:
        value = values[vital.loinc]
        if vital.loinc == "8302-2" and age >= 18 and rng.random() < 0.5:
            continue  # adults' height is not measured at every visit
        uuid = new_uuid(rng)
        yield SeedRecord(
            "observation", uuid, _observation(uuid, vital, value, patient, encounter_uuid, at)
        )


def _observation(
    uuid: str, vital: Vital, value: float, patient: Person, encounter_uuid: str, at: datetime
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": uuid,
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {"code": vital.concept_uuid, "display": vital.name},
                {"system": "http://loinc.org", "code": vital.loinc, "display": vital.loinc_display},
                {"system": "https://cielterminology.org", "code": str(vital.ciel)},
            ],
            "text": vital.name,
        },
        "subject": reference("Patient", patient.uuid, patient.display),
        "encounter": reference("Encounter", encounter_uuid),
        "effectiveDateTime": _instant(at),
        "issued": _instant(at + timedelta(minutes=2)),
        "valueQuantity": {"value": value, "unit": vital.unit, "system": _UCUM, "code": vital.ucum},
    }


def _vital_values(rng: random.Random, age: float) -> dict[str, float]:
    """Plausible values for a person of ``age`` years (children are smaller, breathe faster)."""
    child = age < 16
    if child:
        weight = 3.5 + 2.6 * age + rng.uniform(-1.0, 2.0)
        height = 50 + 6.2 * age + rng.uniform(-4.0, 4.0)
    else:
        weight = rng.gauss(66, 12)
        height = rng.gauss(166, 8)
    return {
        "8867-4": float(rng.randint(80, 130) if child else rng.randint(56, 104)),
        "8480-6": float(rng.randint(90, 115) if child else rng.randint(100, 165)),
        "8462-4": float(rng.randint(55, 75) if child else rng.randint(60, 100)),
        "8310-5": round(
            rng.uniform(36.1, 37.4) if rng.random() < 0.85 else rng.uniform(37.5, 39.6), 1
        ),
        "29463-7": round(max(2.5, weight), 1),
        "8302-2": round(max(45.0, height), 1),
        "9279-1": float(rng.randint(20, 34) if child else rng.randint(12, 20)),
        "59408-5": float(rng.randint(94, 100) if rng.random() < 0.95 else rng.randint(88, 93)),
    }
