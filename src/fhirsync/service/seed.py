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

The vocabulary is in :mod:`~fhirsync.service.seed_vocab`, the clinic in
:mod:`~fhirsync.service.seed_site` and the patients in :mod:`~fhirsync.service.seed_patients`.
Every FHIR resource passes :func:`~fhirsync.service.validation.validate_resource` and every REST
body :func:`~fhirsync.service.rest_body.validate` before it is written through the store's one
write path, in transactions of ``batch_size`` records, so each record gets its feed event.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from fhirsync import categories as cats
from fhirsync.records import RecordWrite
from fhirsync.service import rest_body
from fhirsync.service.seed_parts import SeedRecord
from fhirsync.service.seed_patients import patient_records
from fhirsync.service.seed_site import Site, metadata_records
from fhirsync.service.seed_vocab import CLOCK
from fhirsync.service.validation import validate_resource
from fhirsync.store import records
from fhirsync.store.engine import Database

__all__ = ["BATCH_SIZE", "CLOCK", "SeedRecord", "SeedResult", "check", "generate", "seed_node"]

BATCH_SIZE = 1000


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
    yield from metadata_records()
    site_rng = random.Random(f"fhirsync-seed:{seed}:site")
    site = Site.make(site_rng, providers=3 + patients // 200)
    yield from site.records()
    for number in range(patients):
        yield from patient_records(
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
