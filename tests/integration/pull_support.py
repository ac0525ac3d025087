"""Helpers shared by the pull fault and feature tests (real nodes on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid as uuidlib
from typing import Any

import orjson
from sqlalchemy import select

from fhirsync.records import RecordWrite
from fhirsync.store import records as store_records
from fhirsync.store.tables import events, records
from fhirsync.sync.runner import run_pull
from fhirsync.sync.status import RunFinished
from fhirsync.testing.network import count_rows, run_on
from fhirsync.testing.servers import NodeHandle

FHIR = "/ws/fhir2/R4"
Held = dict[tuple[str, str], tuple[str, str]]


def new_uuid() -> str:
    """A fresh record uuid."""
    return str(uuidlib.uuid4())


def patient(uuid: str, family: str) -> dict[str, Any]:
    """A valid FHIR R4 Patient."""
    return {
        "resourceType": "Patient",
        "id": uuid,
        "name": [{"use": "official", "family": family, "given": ["Ama"]}],
        "gender": "female",
        "birthDate": "1988-02-14",
    }


def encounter(uuid: str, subject: str) -> dict[str, Any]:
    """A valid FHIR R4 Encounter of the Patient ``subject``."""
    return {
        "resourceType": "Encounter",
        "id": uuid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{subject}"},
    }


def put(node: NodeHandle, resource: dict[str, Any]) -> None:
    """PUT ``resource`` through the node's FHIR API (validated there)."""
    with node.client() as client:
        path = f"{FHIR}/{resource['resourceType']}/{resource['id']}"
        response = client.put(path, json=resource)
        assert response.status_code in (200, 201), response.text


def write_raw(node: NodeHandle, category: str, bodies: list[dict[str, Any]], origin: str) -> None:
    """Write ``bodies`` straight into the node's store (no validation), as made on ``origin``."""
    _config, db = node.open()
    try:
        writes = [RecordWrite(category, b["id"], b, origin) for b in bodies]
        with db.write() as conn:
            store_records.write_many(conn, writes)
    finally:
        db.dispose()


def invalid_patient_with_visit(parent: NodeHandle) -> tuple[str, str]:
    """An invalid Patient written straight into ``parent``'s store (its API would refuse it) and
    an Encounter of it: on pull the patient fails and the encounter waits for it. Their uuids."""
    bad, visit = new_uuid(), new_uuid()
    write_raw(parent, "patient", [{**patient(bad, "Bad"), "gender": "robot"}], "parent")
    put(parent, encounter(visit, bad))
    return bad, visit


def held(node: NodeHandle) -> Held:
    """(category, uuid) → (content hash, state) of every record the node stores."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(records.c.category, records.c.uuid, records.c.content_hash, records.c.state)
            )
            return {(r.category, r.uuid): (r.content_hash, r.state) for r in rows}
    finally:
        db.dispose()


def event_actions(node: NodeHandle) -> dict[str, list[str]]:
    """record uuid → the actions of the node's own event log for it, in order."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(events.c.record_uuid, events.c.action).order_by(events.c.id)
            ).all()
    finally:
        db.dispose()
    out: dict[str, list[str]] = {}
    for uuid, action in rows:
        out.setdefault(uuid, []).append(action)
    return out


def record_count(node: NodeHandle) -> int:
    """Records the node stores."""
    return count_rows(node, records)


def committed_records(node: NodeHandle) -> int:
    """Records the node has committed so far (0 while its database is not there yet)."""
    try:
        return record_count(node)
    except Exception:  # noqa: BLE001 - the node may be creating its tables this instant
        return 0


def pull(node: NodeHandle) -> RunFinished:
    """One in-process pull run of ``node``."""
    return run_on(node, run_pull)


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``python -m fhirsync ARGS`` as a subprocess (exit code, stdout, stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "fhirsync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "250"},
    )


def edit_sync2(node: NodeHandle, **general: Any) -> dict[str, Any]:
    """Load ``sync2.json``, update its ``general`` section with ``general``; the data (saved)."""
    path = node.node_dir / "sync2.json"
    data: dict[str, Any] = json.loads(path.read_text())
    data["general"].update(general)
    path.write_text(json.dumps(data))
    return data


def save_sync2(node: NodeHandle, data: dict[str, Any]) -> None:
    """Write ``data`` as the node's ``sync2.json``."""
    (node.node_dir / "sync2.json").write_text(json.dumps(data))


def body_of(node: NodeHandle, uuid: str) -> dict[str, Any]:
    """The stored body of record ``uuid``."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            raw = conn.execute(select(records.c.body).where(records.c.uuid == uuid)).scalar_one()
    finally:
        db.dispose()
    body: dict[str, Any] = orjson.loads(raw)
    return body
