"""Helpers for the tests of a node's HTTP APIs: a valid Patient, user accounts, error bodies."""

from __future__ import annotations

from typing import Any

import httpx

from fhirsync.store import users
from fhirsync.testing.servers import NodeHandle

FHIR_JSON = "application/fhir+json"


def patient(**extra: Any) -> dict[str, Any]:
    """A valid FHIR R4 Patient (family Mensah, male) with ``extra`` fields set or replaced."""
    return {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Mensah", "given": ["Kwame"]}],
        "gender": "male",
        "birthDate": "1984-03-09",
        **extra,
    }


def add_user(node: NodeHandle, name: str, role: users.Role, instance_id: str | None = None) -> None:
    """Add the account ``name`` (password ``{name}-password``) to the node's store."""
    _config, db = node.open()
    try:
        with db.write() as conn:
            users.add(conn, name, f"{name}-password", role, instance_id)
    finally:
        db.dispose()


def as_user(node: NodeHandle, name: str) -> httpx.Client:
    """An httpx client for the node, signed in as an account made by :func:`add_user`."""
    return httpx.Client(base_url=node.base_url, auth=(name, f"{name}-password"), timeout=30.0)


def outcome_issue(response: httpx.Response) -> dict[str, Any]:
    """The first issue of a FHIR OperationOutcome answer (asserting it is one, as FHIR JSON)."""
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    first: dict[str, Any] = body["issue"][0]
    return first
