"""The parts generated records are built from: the record itself, seeded uuids, references,
places and people.

Everything random is drawn from the ``random.Random`` passed in, so the same generator state
always gives the same parts.
"""

from __future__ import annotations

import random
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

__all__ = ["Person", "Place", "SeedRecord", "display_name", "new_uuid", "phone", "reference"]


@dataclass(frozen=True, slots=True)
class SeedRecord:
    """One generated record: its category, uuid and body (FHIR resource or REST representation)."""

    category: str
    uuid: str
    body: dict[str, Any]


def new_uuid(rng: random.Random) -> str:
    """A version 4 uuid drawn from ``rng`` (never from the system's entropy)."""
    return str(uuidlib.UUID(int=rng.getrandbits(128), version=4))


def reference(resource_type: str, uuid: str, display: str | None = None) -> dict[str, str]:
    """A FHIR Reference to ``resource_type/uuid``, with its display when one is given."""
    out = {"reference": f"{resource_type}/{uuid}", "type": resource_type}
    if display:
        out["display"] = display
    return out


@dataclass(frozen=True, slots=True)
class Place:
    """A town a facility or a patient is in."""

    city: str
    district: str
    state: str
    postal: str
    country: str

    def address(self, line: str | None = None, *, use: str | None = None) -> dict[str, Any]:
        """A FHIR Address in this place (a street ``line`` and ``use`` when given)."""
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
class Person:
    """Whom or where a reference points to: a uuid and its display."""

    uuid: str
    display: str


def phone(rng: random.Random) -> str:
    """A Kenyan mobile number drawn from ``rng``."""
    return f"+254 7{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}"


def display_name(name: dict[str, Any]) -> str:
    """A FHIR HumanName as shown: given names, then the family name."""
    return " ".join([*name.get("given", []), name.get("family", "")]).strip()
