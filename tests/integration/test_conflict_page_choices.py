"""The Conflicts page's per-field choices, posted as the form sends them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
from tests.integration.api_support import FHIR_JSON, admin_pages, csrf_token, patient
from tests.integration.conflict_support import open_conflicts

from fhirsync.store import conflicts
from fhirsync.store.conflicts import ConflictNote
from fhirsync.testing.servers import NodeHandle


def _conflict_with_a_local_delete(node: NodeHandle) -> tuple[str, str]:
    """A patient edited on the parent (gender) and deleted here: conflicts on gender and state.

    Returns (conflict uuid, patient uuid)."""
    with node.client() as api:
        created = api.post(
            "/ws/fhir2/R4/Patient", json=patient(), headers={"content-type": FHIR_JSON}
        )
        body = created.json()
        uuid = body["id"]
        base = {k: v for k, v in body.items() if k != "meta"}
        local, remote = dict(base, gender="female"), dict(base, gender="other")
        api.put(f"/ws/fhir2/R4/Patient/{uuid}", json=local, headers={"content-type": FHIR_JSON})
    note = ConflictNote(
        "patient", uuid, "pull", orjson.dumps(base), "active", orjson.dumps(local), "active",
        orjson.dumps(remote), "active", "2", ["gender"],
    )  # fmt: skip
    _config, db = node.open()
    try:
        with db.write() as conn:
            [conflict] = conflicts.record_many(conn, [note], now=datetime.now(UTC))
    finally:
        db.dispose()
    with node.client() as api:
        assert api.delete(f"/ws/fhir2/R4/Patient/{uuid}").status_code == 204
    return conflict, uuid


def test_a_typed_state_that_is_none_is_refused(node: NodeHandle) -> None:
    # The record was deleted here and edited on the parent. Typing a state that is none
    # ("delted") resolved the conflict with the record active again: undeleted, silently.
    conflict, record = _conflict_with_a_local_delete(node)
    with admin_pages(node) as client:
        form = client.get(f"/sync2/conflicts/{conflict}").text
        paths = re.findall(r'name="path-(\d+)" value="([^"]*)"', form)
        assert "@state" in dict(paths).values()
        data = {"csrf_token": csrf_token(form)}
        for index, path in paths:
            data[f"path-{index}"] = path
            data[f"choice-{index}"] = "edit" if path == "@state" else "local"
            data[f"value-{index}"] = "delted"
        answer = client.post(f"/sync2/conflicts/{conflict}/resolve", data=data)
        shown = client.get(answer.headers["location"]).text
    assert "Not resolved" in shown and "active, voided, retired or deleted" in shown
    assert [c.uuid for c in open_conflicts(node)] == [conflict]
    with node.client() as api:
        assert api.get(f"/ws/fhir2/R4/Patient/{record}").status_code == 410  # still deleted
