"""Deterministic, realistic sample data for a clinic node (``fhirsync seed``).

The same ``patients`` and ``seed`` always give the same records, byte for byte: every uuid
comes from a seeded ``random.Random`` (or ``uuid5`` for metadata every clinic shares) and every
clinical time is counted from a fixed clock (:data:`CLOCK`), never from ``now()``. Each patient
draws from its own generator (seeded with ``seed`` and the patient's number), so patient 7 is
the same whether 10 or 10,000 patients are made.

What a seeded node holds, shaped as OpenMRS's FHIR and REST modules serve it:

- REST metadata: visit types and the CIEL vital-sign concepts (their usual ``5087AAAA…`` uuids);
- a facility (Location tagged "Visit Location") and its wards, and a few practitioners;
- patients with an OpenMRS ID (Luhn mod-30 check character), names, address, phone, gender and
  birth date;
- visits (Encounters tagged ``visit``), each with a Vitals encounter and often a Visit Note
  encounter (tagged ``encounter``, ``partOf`` the visit);
- vital-sign Observations with LOINC codes and UCUM units, referencing the patient and encounter.

Every FHIR resource passes :func:`~fhirsync.service.validation.validate_resource` and every REST
body :func:`~fhirsync.service.rest_body.validate` before it is written through the store's one write
path, in transactions of ``batch_size`` records, so each record gets its feed event.
"""

from __future__ import annotations

import random
import uuid as uuidlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhirsync import categories as cats
from fhirsync.categories import ENCOUNTER_TAG_SYSTEM
from fhirsync.records import RecordWrite
from fhirsync.service import rest_body
from fhirsync.service.validation import validate_resource
from fhirsync.store import records
from fhirsync.store.engine import Database

CLOCK = datetime(2025, 3, 1, tzinfo=UTC)
"""The seed's "today": visits fall in the two years before it, ages are counted to it."""
BATCH_SIZE = 1000
_NS = uuidlib.UUID("6f0d5b1e-3c1a-4c5e-9b8e-2f4a1d7c9e30")  # namespace of shared metadata
_OPENMRS_ID_TYPE = "05a29f94-c0ed-11e2-94be-8c13b969e334"
_OPENMRS_ID_CHARS = "0123456789ACDEFGHJKLMNPRTUVWXY"
_NUMERIC = "8d4a4488-c2cc-11de-8d13-0010c6dffd0f"  # OpenMRS concept datatype "Numeric"
_MISC = "8d492774-c2cc-11de-8d13-0010c6dffd0f"  # OpenMRS concept class "Misc"
_LOCATION_TAG = "http://fhir.openmrs.org/ext/location-tag"
_UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True, slots=True)
class Vital:
    """One vital sign: its CIEL concept, LOINC code and UCUM unit."""

    ciel: int
    name: str
    loinc: str
    loinc_display: str
    ucum: str
    unit: str

    @property
    def concept_uuid(self) -> str:
        """The CIEL concept uuid as OpenMRS installs it (``5087AAAA…``, 36 characters)."""
        return f"{self.ciel}".ljust(36, "A")


VITALS: tuple[Vital, ...] = (
    Vital(5087, "Pulse", "8867-4", "Heart rate", "/min", "beats/min"),
    Vital(5085, "Systolic blood pressure", "8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg"),
    Vital(5086, "Diastolic blood pressure", "8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg"),
    Vital(5088, "Temperature (C)", "8310-5", "Body temperature", "Cel", "°C"),
    Vital(5089, "Weight (kg)", "29463-7", "Body weight", "kg", "kg"),
    Vital(5090, "Height (cm)", "8302-2", "Body height", "cm", "cm"),
    Vital(5242, "Respiratory rate", "9279-1", "Respiratory rate", "/min", "breaths/min"),
    Vital(5092, "Arterial blood oxygen saturation", "59408-5", "Oxygen saturation", "%", "%"),
)
VISIT_TYPES: tuple[tuple[str, str], ...] = (
    ("Facility Visit", "Patient visits the clinic or hospital"),
    ("Home Visit", "A health worker visits the patient at home"),
    ("Outreach Visit", "Patient is seen at a community outreach clinic"),
)
_ENCOUNTER_TYPES = {"Vitals": "vitals", "Visit Note": "visit-note"}
_WARDS = ("Outpatient Clinic", "Inpatient Ward", "Laboratory", "Pharmacy", "Registration Desk")
_FACILITIES = (
    "Amani Health Centre",
    "Tumaini Dispensary",
    "Upendo Sub-County Hospital",
    "Baraka Clinic",
    "Neema Health Centre",
)
_PLACES = (
    ("Kisumu", "Kisumu Central", "Kisumu", "40100", "Kenya"),
    ("Eldoret", "Kapseret", "Uasin Gishu", "30100", "Kenya"),
    ("Mbarara", "Kakoba", "Mbarara", "", "Uganda"),
    ("Gulu", "Laroo", "Gulu", "", "Uganda"),
    ("Musanze", "Muhoza", "Northern Province", "", "Rwanda"),
    ("Mwanza", "Nyamagana", "Mwanza", "33101", "Tanzania"),
)
_FEMALE = ("Akinyi", "Wanjiru", "Nakato", "Achieng", "Mukamana", "Neema", "Grace", "Aisha",
           "Faith", "Mercy", "Esther", "Halima", "Sarah", "Zawadi", "Imani", "Joyce")  # fmt: skip
_MALE = ("Otieno", "Kamau", "Mugisha", "Okello", "Habimana", "Baraka", "Joseph", "Hassan",
         "Peter", "David", "Emmanuel", "Juma", "Samuel", "Moses", "Brian", "Daniel")  # fmt: skip
_FAMILY = ("Odhiambo", "Mwangi", "Ssempala", "Ochieng", "Uwimana", "Njoroge", "Kiprono",
           "Nansubuga", "Mutua", "Niyonzima", "Wafula", "Atieno", "Kariuki", "Mbabazi", "Omondi",
           "Chebet", "Nyambura", "Byaruhanga", "Kimani", "Mushi")  # fmt: skip
_STREETS = ("Oginga Odinga Road", "Uhuru Highway", "Market Street", "Hospital Road", "Station Road",
            "Kenyatta Avenue", "Church Road", "School Lane")  # fmt: skip


@dataclass(frozen=True, slots=True)
class SeedRecord:
    """One generated record: its category, uuid and body (FHIR resource or REST representation)."""

    category: str
    uuid: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SeedResult:
    """Records generated per category, and how many writes changed the store (got an event)."""

    counts: dict[str, int]
    changed: int


# --- the public entry points -------------------------------------------------------------------


def generate(patients: int, seed: int = 1) -> Iterator[SeedRecord]:
    """Every record of a seeded node, in dependency order (metadata, sites, people, clinical)."""
    if patients < 0:
        raise ValueError("patients must not be negative")
    yield from _metadata()
    site_rng = random.Random(f"fhirsync-seed:{seed}:site")
    site = _Site.make(site_rng, providers=3 + patients // 200)
    yield from site.records()
    for number in range(patients):
        yield from _patient_records(
            random.Random(f"fhirsync-seed:{seed}:patient:{number}"), site, seed, number
        )


def seed_node(
    db: Database,
    origin: str,
    patients: int,
    seed: int = 1,
    *,
    batch_size: int = BATCH_SIZE,
    now: datetime | None = None,
) -> SeedResult:
    """Validate and write the records of :func:`generate` (``batch_size`` per transaction).

    ``now`` stamps ``meta.lastUpdated`` and the events (the current time if None); with the same
    ``now`` two seeded stores hold byte-identical records.
    """
    counts: Counter[str] = Counter()
    changed = 0
    batch: list[RecordWrite] = []
    for rec in generate(patients, seed):
        check(rec)
        counts[rec.category] += 1
        batch.append(RecordWrite(rec.category, rec.uuid, rec.body, origin))
        if len(batch) >= batch_size:
            changed += _write(db, batch, now)
            batch = []
    if batch:
        changed += _write(db, batch, now)
    return SeedResult(dict(counts), changed)


def check(rec: SeedRecord) -> None:
    """Validate one generated record as the APIs would (InvalidResource if it is wrong)."""
    category = cats.get(rec.category)
    if category.fhir_type is not None:
        validate_resource(rec.body, category.fhir_type)
    else:
        body, _state = rest_body.split_representation(category, rec.body)
        rest_body.validate(category, body)


def _write(db: Database, batch: Sequence[RecordWrite], now: datetime | None) -> int:
    with db.write() as conn:
        results = records.write_many(conn, batch, now=now)
    return sum(1 for r in results if r.event is not None)


# --- metadata and the site ---------------------------------------------------------------------


def shared_uuid(kind: str, name: str) -> str:
    """The uuid of metadata every seeded clinic shares (a visit type, an encounter type)."""
    return str(uuidlib.uuid5(_NS, f"{kind}:{name}"))


def _metadata() -> Iterator[SeedRecord]:
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


def _uuid(rng: random.Random) -> str:
    return str(uuidlib.UUID(int=rng.getrandbits(128), version=4))


def _ref(resource_type: str, uuid: str, display: str | None = None) -> dict[str, str]:
    out = {"reference": f"{resource_type}/{uuid}", "type": resource_type}
    if display:
        out["display"] = display
    return out


@dataclass(frozen=True, slots=True)
class _Place:
    city: str
    district: str
    state: str
    postal: str
    country: str

    def address(self, line: str | None = None, *, use: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"city": self.city, "district": self.district, "state": self.state}
        out["country"] = self.country
        if self.postal:
            out["postalCode"] = self.postal
        if line:
            out["line"] = [line]
        if use:
            out["use"] = use
        return out


@dataclass(frozen=True, slots=True)
class _Person:
    uuid: str
    display: str


@dataclass(frozen=True, slots=True)
class _Site:
    """The facility, its wards and its practitioners."""

    place: _Place
    facility: SeedRecord
    wards: tuple[SeedRecord, ...]
    practitioners: tuple[SeedRecord, ...]

    @classmethod
    def make(cls, rng: random.Random, providers: int) -> _Site:
        place = _Place(*rng.choice(_PLACES))
        name = rng.choice(_FACILITIES)
        facility = _location(rng, name, place, ("Visit Location",), None)
        parent = _ref("Location", facility.uuid, name)
        wards = tuple(_location(rng, ward, place, ("Login Location",), parent) for ward in _WARDS)
        staff = tuple(_practitioner(rng, number, place) for number in range(providers))
        return cls(place, facility, wards, staff)

    def records(self) -> Iterator[SeedRecord]:
        yield self.facility
        yield from self.wards
        yield from self.practitioners

    def ward(self, name: str) -> _Person:
        rec = next(w for w in self.wards if w.body["name"] == name)
        return _Person(rec.uuid, name)

    def provider(self, rng: random.Random) -> _Person:
        rec = rng.choice(self.practitioners)
        return _Person(rec.uuid, _display_name(rec.body["name"][0]))


def _location(
    rng: random.Random,
    name: str,
    place: _Place,
    tags: Sequence[str],
    parent: dict[str, str] | None,
) -> SeedRecord:
    uuid = _uuid(rng)
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


def _practitioner(rng: random.Random, number: int, place: _Place) -> SeedRecord:
    uuid = _uuid(rng)
    gender = rng.choice(("female", "male"))
    given = rng.choice(_FEMALE if gender == "female" else _MALE)
    family = rng.choice(_FAMILY)
    role = "Nurse" if number % 3 else "Clinician"
    body: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": uuid,
        "identifier": [
            {"use": "official", "type": {"text": role}, "value": f"PRV-{number + 1:04d}"}
        ],
        "active": True,
        "name": [{"id": _uuid(rng), "family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": _phone(rng), "use": "work"}],
        "gender": gender,
        "address": [place.address(use="work")],
    }
    return SeedRecord("provider", uuid, body)


# --- patients and their care -------------------------------------------------------------------


def openmrs_id(number: int) -> str:
    """An OpenMRS ID: ``number`` in base 30 (OpenMRS's alphabet) and a Luhn mod-30 check."""
    chars, base = _OPENMRS_ID_CHARS, len(_OPENMRS_ID_CHARS)
    digits = ""
    while True:
        number, rest_ = divmod(number, base)
        digits = chars[rest_] + digits
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


def _phone(rng: random.Random) -> str:
    return f"+254 7{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}"


def _display_name(name: dict[str, Any]) -> str:
    return " ".join([*name.get("given", []), name.get("family", "")]).strip()


def _patient_records(
    rng: random.Random, site: _Site, seed: int, number: int
) -> Iterator[SeedRecord]:
    patient = _patient(rng, site, seed, number)
    yield patient
    person = _Person(patient.uuid, _display_name(patient.body["name"][0]))
    born = date.fromisoformat(patient.body["birthDate"])
    visits = rng.choices((0, 1, 2, 3), weights=(1, 4, 3, 2))[0]
    starts = sorted(
        CLOCK - timedelta(minutes=rng.randint(60, 730 * 24 * 60)) for _ in range(visits)
    )
    for day in starts:
        start = day.replace(hour=rng.randint(8, 15), second=0, microsecond=0)
        yield from _visit_records(rng, site, person, born, start)


def _patient(rng: random.Random, site: _Site, seed: int, number: int) -> SeedRecord:
    uuid = _uuid(rng)
    gender = rng.choices(("female", "male"), weights=(52, 48))[0]
    names = _FEMALE if gender == "female" else _MALE
    given = [rng.choice(names)] + ([rng.choice(names)] if rng.random() < 0.3 else [])
    born = CLOCK.date() - timedelta(days=rng.randint(30, 85 * 365))
    place = _Place(*rng.choice(_PLACES))
    registration = site.ward("Registration Desk")
    identifier = {
        "id": _uuid(rng),
        "extension": [
            {
                "url": "http://fhir.openmrs.org/ext/patient/identifier#location",
                "valueReference": _ref("Location", registration.uuid, registration.display),
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
        "name": [{"id": _uuid(rng), "family": rng.choice(_FAMILY), "given": given}],
        "telecom": [{"id": _uuid(rng), "system": "phone", "value": _phone(rng), "use": "mobile"}],
        "gender": gender,
        "birthDate": born.isoformat(),
        "address": [
            {
                "id": _uuid(rng),
                **place.address(f"{rng.randint(1, 400)} {rng.choice(_STREETS)}", use="home"),
            }
        ],
    }
    return SeedRecord("patient", uuid, body)


def _visit_records(
    rng: random.Random, site: _Site, patient: _Person, born: date, start: datetime
) -> Iterator[SeedRecord]:
    visit_uuid = _uuid(rng)
    visit_type = rng.choices(VISIT_TYPES, weights=(8, 1, 1))[0][0]
    end = start + timedelta(minutes=rng.randint(30, 240))
    clinic = site.ward("Outpatient Clinic")
    yield SeedRecord(
        "visit",
        visit_uuid,
        {
            "resourceType": "Encounter",
            "id": visit_uuid,
            "meta": {"tag": [_tag("visit", "Visit")]},
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
                            "system": "http://fhir.openmrs.org/code-system/visit-type",
                            "code": shared_uuid("visittype", visit_type),
                            "display": visit_type,
                        }
                    ]
                }
            ],
            "subject": _ref("Patient", patient.uuid, patient.display),
            "location": [
                {"location": _ref("Location", site.facility.uuid, site.facility.body["name"])}
            ],
            "period": {"start": _instant(start), "end": _instant(end)},
        },
    )
    vitals_at = start + timedelta(minutes=rng.randint(5, 25))
    vitals = _encounter(rng, site, patient, visit_uuid, "Vitals", vitals_at, clinic)
    yield vitals
    yield from _observations(rng, patient, vitals.uuid, born, vitals_at)
    if rng.random() < 0.6:
        note_at = min(end, vitals_at + timedelta(minutes=rng.randint(10, 60)))
        yield _encounter(rng, site, patient, visit_uuid, "Visit Note", note_at, clinic)


def _tag(code: str, display: str) -> dict[str, str]:
    return {"system": ENCOUNTER_TAG_SYSTEM, "code": code, "display": display}


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _encounter(
    rng: random.Random,
    site: _Site,
    patient: _Person,
    visit_uuid: str,
    kind: str,
    at: datetime,
    where: _Person,
) -> SeedRecord:
    uuid = _uuid(rng)
    provider = site.provider(rng)
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": uuid,
        "meta": {"tag": [_tag("encounter", "Encounter")]},
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
                        "system": "http://fhir.openmrs.org/code-system/encounter-type",
                        "code": shared_uuid("encountertype", _ENCOUNTER_TYPES[kind]),
                        "display": kind,
                    }
                ]
            }
        ],
        "subject": _ref("Patient", patient.uuid, patient.display),
        "participant": [{"individual": _ref("Practitioner", provider.uuid, provider.display)}],
        "partOf": _ref("Encounter", visit_uuid),
        "location": [{"location": _ref("Location", where.uuid, where.display)}],
        "period": {"start": _instant(at)},
    }
    return SeedRecord("encounter", uuid, body)


def _observations(
    rng: random.Random, patient: _Person, encounter_uuid: str, born: date, at: datetime
) -> Iterator[SeedRecord]:
    age = max(0.1, (at.date() - born).days / 365.25)
    values = _vital_values(rng, age)
    for vital in VITALS:
        value = values[vital.loinc]
        if vital.loinc == "8302-2" and age >= 18 and rng.random() < 0.5:
            continue  # adults' height is not measured at every visit
        uuid = _uuid(rng)
        yield SeedRecord(
            "observation", uuid, _observation(uuid, vital, value, patient, encounter_uuid, at)
        )


def _observation(
    uuid: str, vital: Vital, value: float, patient: _Person, encounter_uuid: str, at: datetime
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
        "subject": _ref("Patient", patient.uuid, patient.display),
        "encounter": _ref("Encounter", encounter_uuid),
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
