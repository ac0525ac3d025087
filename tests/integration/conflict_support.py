"""Patients read, edited and voided over FHIR on real nodes, and the conflicts a node holds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from fhirsync.store import conflicts as conflict_repo
from fhirsync.store.tables import audit
from fhirsync.testing.network import FHIR
from fhirsync.testing.servers import NodeHandle

PAIR: tuple[tuple[str, str | None], ...] = (("parent", None), ("child", "parent"))


def read(node: NodeHandle, uuid: str) -> dict[str, Any]:
    """The Patient ``uuid`` as ``node`` serves it."""
    with node.client() as client:
        response = client.get(f"{FHIR}/Patient/{uuid}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


def edit(node: NodeHandle, uuid: str, **fields: Any) -> None:
    """Change ``fields`` of Patient ``uuid`` on ``node`` (a PUT of the whole body)."""
    body = {**read(node, uuid), **fields}
    with node.client() as client:
        client.put(f"{FHIR}/Patient/{uuid}", json=body).raise_for_status()


def void(node: NodeHandle, uuid: str) -> None:
    """Void Patient ``uuid`` on ``node``."""
    with node.client() as client:
        response = client.delete(f"{FHIR}/Patient/{uuid}")
        assert response.status_code == 204, response.text


def open_conflicts(node: NodeHandle) -> list[conflict_repo.Conflict]:
    """The open conflicts of ``node``, newest first."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            return conflict_repo.list_conflicts(conn)
    finally:
        db.dispose()


def conflict_of(node: NodeHandle, conflict_uuid: str) -> conflict_repo.Conflict:
    """One conflict of ``node`` (any status)."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            found = conflict_repo.get(conn, conflict_uuid)
    finally:
        db.dispose()
    assert found is not None
    return found


def audit_actions(node: NodeHandle, uuid: str) -> list[str]:
    """The actions of the audit rows ``node`` holds about record ``uuid``, oldest first."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            rows = conn.execute(select(audit.c.action).where(audit.c.record_uuid == uuid))
            return [r.action for r in rows]
    finally:
        db.dispose()
