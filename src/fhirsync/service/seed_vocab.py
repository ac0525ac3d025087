"""The fixed vocabulary of the sample data (``fhirsync seed``).

The metadata every seeded clinic shares (visit types, encounter types, the CIEL vital-sign concepts
with their LOINC codes and UCUM units, each with the uuid OpenMRS or :func:`shared_uuid` gives it),
the seed's clock, and the facility, place and person names records are drawn from.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "CLOCK",
    "ENCOUNTER_TYPES",
    "FACILITIES",
    "FAMILY",
    "FEMALE",
    "MALE",
    "PLACES",
    "STREETS",
    "VISIT_TYPES",
    "VITALS",
    "WARDS",
    "Vital",
    "shared_uuid",
]

CLOCK = datetime(2025, 3, 1, tzinfo=UTC)
"""The seed's "today": visits fall in the two years before it, ages are counted to it."""
_NS = uuidlib.UUID("6f0d5b1e-3c1a-4c5e-9b8e-2f4a1d7c9e30")  # namespace of shared metadata


def shared_uuid(kind: str, name: str) -> str:
    """The uuid of metadata every seeded clinic shares (a visit type, an encounter type)."""
    return str(uuidlib.uuid5(_NS, f"{kind}:{name}"))


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
ENCOUNTER_TYPES: dict[str, str] = {"Vitals": "vitals", "Visit Note": "visit-note"}
WARDS = ("Outpatient Clinic", "Inpatient Ward", "Laboratory", "Pharmacy", "Registration Desk")
FACILITIES = (
    "Amani Health Centre",
    "Tumaini Dispensary",
    "Upendo Sub-County Hospital",
    "Baraka Clinic",
    "Neema Health Centre",
)
PLACES = (
    ("Kisumu", "Kisumu Central", "Kisumu", "40100", "Kenya"),
    ("Eldoret", "Kapseret", "Uasin Gishu", "30100", "Kenya"),
    ("Mbarara", "Kakoba", "Mbarara", "", "Uganda"),
    ("Gulu", "Laroo", "Gulu", "", "Uganda"),
    ("Musanze", "Muhoza", "Northern Province", "", "Rwanda"),
    ("Mwanza", "Nyamagana", "Mwanza", "33101", "Tanzania"),
)
FEMALE = ("Akinyi", "Wanjiru", "Nakato", "Achieng", "Mukamana", "Neema", "Grace", "Aisha",
           "Faith", "Mercy", "Esther", "Halima", "Sarah", "Zawadi", "Imani", "Joyce")  # fmt: skip
MALE = ("Otieno", "Kamau", "Mugisha", "Okello", "Habimana", "Baraka", "Joseph", "Hassan",
         "Peter", "David", "Emmanuel", "Juma", "Samuel", "Moses", "Brian", "Daniel")  # fmt: skip
FAMILY = ("Odhiambo", "Mwangi", "Ssempala", "Ochieng", "Uwimana", "Njoroge", "Kiprono",
           "Nansubuga", "Mutua", "Niyonzima", "Wafula", "Atieno", "Kariuki", "Mbabazi", "Omondi",
           "Chebet", "Nyambura", "Byaruhanga", "Kimani", "Mushi")  # fmt: skip
STREETS = ("Oginga Odinga Road", "Uhuru Highway", "Market Street", "Hospital Road", "Station Road",
            "Kenyatta Avenue", "Church Road", "School Lane")  # fmt: skip
