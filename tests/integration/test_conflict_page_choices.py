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


def _gender_conflict(node: NodeHandle) -> tuple[str, str]:
    """A patient whose gender was changed here and on the parent differently: (conflict uuid,
    patient uuid)."""
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
    return conflict, uuid


def _delete(node: NodeHandle, record: str) -> None:
    """Delete the patient here (it refreshes the open conflict: now on gender and state)."""
    with node.client() as api:
        assert api.delete(f"/ws/fhir2/R4/Patient/{record}").status_code == 204


def test_a_typed_state_that_is_none_is_refused(node: NodeHandle) -> None:
    # The record was deleted here and edited on the parent. Typing a state that is none
    # ("delted") resolved the conflict with the record active again: undeleted, silently.
    conflict, record = _gender_conflict(node)
    _delete(node, record)
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


def test_a_form_made_before_a_local_change_is_refused_naming_it(node: NodeHandle) -> None:
    # A delete made here after the page was shown refreshed the conflict; posting the old form
    # was refused (rightly) "because a newer sync updated it", which no sync had done.
    conflict, record = _gender_conflict(node)
    with admin_pages(node) as client:
        form = client.get(f"/sync2/conflicts/{conflict}").text
        _delete(node, record)
        answer = client.post(
            f"/sync2/conflicts/{conflict}/resolve",
            data={"csrf_token": csrf_token(form), "path-0": "gender", "choice-0": "remote"},
        )
        shown = client.get(answer.headers["location"]).text
    assert "changed since the page was shown" in shown
    assert "a change made here" in shown
    assert [c.uuid for c in open_conflicts(node)] == [conflict]
