"""OpenMRS REST v1 (``/ws/rest/v1/{resource}``) through a running node on 127.0.0.1."""

from __future__ import annotations

import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from tests.integration.api_support import add_user, as_user

from fhirsync.records import ChangeEvent
from fhirsync.store import events, records
from fhirsync.testing.servers import NodeHandle

BASE = "/ws/rest/v1"
CONCEPT = "5089AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
CONCEPT_BODY: dict[str, Any] = {
    "uuid": CONCEPT,
    "names": [{"name": "Weight (kg)", "locale": "en", "conceptNameType": "FULLY_SPECIFIED"}],
    "datatype": {"uuid": "8d4a4488-c2cc-11de-8d13-0010c6dffd0f", "display": "Numeric"},
    "conceptClass": "8d492774-c2cc-11de-8d13-0010c6dffd0f",
    "version": "1.0",
}


def _events(node: NodeHandle, category: str) -> list[ChangeEvent]:
    _config, db = node.open()
    try:
        with db.read() as conn:
            return events.between(conn, category, 1, 1_000_000)
    finally:
        db.dispose()


def _stored_body(node: NodeHandle, category: str, uuid: str) -> dict[str, Any] | None:
    _config, db = node.open()
    try:
        with db.read() as conn:
            rec = records.get(conn, category, uuid)
            return rec.resource() if rec else None
    finally:
        db.dispose()


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == status
    return error


@pytest.mark.postgres
def test_concept_lifecycle_appends_one_event_per_change(node: NodeHandle) -> None:
    with node.client() as client:
        created = client.post(f"{BASE}/concept", json=CONCEPT_BODY)
        assert created.status_code == 201, created.text
        rep = created.json()
        assert rep["uuid"] == CONCEPT  # kept, not replaced (SYNCT-272)
        assert rep["display"] == "Weight (kg)"
        assert rep["retired"] is False
        assert rep["datatype"] == "8d4a4488-c2cc-11de-8d13-0010c6dffd0f"
        assert rep["links"][0] == {
            "rel": "self",
            "uri": f"{node.base_url}{BASE}/concept/{CONCEPT}",
        }

        updated = client.post(f"{BASE}/concept/{CONCEPT}", json={"version": "2.0"})
        assert updated.status_code == 200, updated.text
        assert updated.json()["version"] == "2.0"
        assert updated.json()["names"] == CONCEPT_BODY["names"]  # merged, not replaced

        assert (
            client.delete(f"{BASE}/concept/{CONCEPT}", params={"reason": "dup"}).status_code == 204
        )
        retired = client.get(f"{BASE}/concept/{CONCEPT}", params={"v": "full"})
        assert retired.status_code == 200
        assert retired.json()["retired"] is True
        assert retired.json()["version"] == "2.0"  # the body is kept

        restored = client.post(f"{BASE}/concept/{CONCEPT}", json={"retired": False})
        assert restored.status_code == 200
        assert restored.json()["retired"] is False

        assert client.delete(f"{BASE}/concept/{CONCEPT}", params={"purge": ""}).status_code == 204
        _error(client.get(f"{BASE}/concept/{CONCEPT}"), 404)

    got = _events(node, "concept")
    assert [e.action for e in got] == ["CREATED", "UPDATED", "RETIRED", "UNRETIRED", "DELETED"]
    assert {e.record_uuid for e in got} == {CONCEPT}
    assert {(e.origin, e.via) for e in got} == {("node-a", None)}


def test_representations_full_default_and_ref(node: NodeHandle) -> None:
    with node.client() as client:
        client.post(f"{BASE}/visittype", json={"uuid": "vt-1", "name": "Outpatient"})
        full = client.get(f"{BASE}/visittype/vt-1", params={"v": "full"}).json()
        default = client.get(f"{BASE}/visittype/vt-1").json()
        ref = client.get(f"{BASE}/visittype/vt-1", params={"v": "ref"}).json()
        bad = client.get(f"{BASE}/visittype/vt-1", params={"v": "custom:(uuid)"})
    assert full["name"] == default["name"] == "Outpatient"
    assert "dateChanged" in full["auditInfo"]
    assert {"rel": "full", "uri": f"{node.base_url}{BASE}/visittype/vt-1?v=full"} in default[
        "links"
    ]
    assert set(ref) == {"uuid", "display", "links"}
    assert ref["display"] == "Outpatient"
    assert _error(bad, 400)["field"] == "v"


def test_stored_body_has_no_server_bookkeeping(node: NodeHandle) -> None:
    body = {
        "uuid": "prog-1",
        "name": "HIV Care",
        "concept": {"uuid": "c-hiv", "display": "HIV", "links": []},
        "display": "HIV Care",
        "retired": False,
        "links": [{"rel": "self", "uri": "http://elsewhere/ws/rest/v1/program/prog-1"}],
        "auditInfo": {"dateCreated": "2018-11-26"},
        "resourceVersion": "1.8",
        "description": None,
    }
    with node.client() as client:
        assert client.post(f"{BASE}/program", json=body).status_code == 201
    stored = _stored_body(node, "program", "prog-1")
    assert stored == {"uuid": "prog-1", "name": "HIV Care", "concept": "c-hiv"}


def test_relationship_void_and_unvoid(node: NodeHandle) -> None:
    body = {
        "personA": {"uuid": "person-a", "display": "Alice"},
        "personB": "person-b",
        "relationshipType": "8d91a210-c2cc-11de-8d13-0010c6dffd0f",
    }
    with node.client() as client:
        created = client.post(f"{BASE}/relationship", json=body)
        assert created.status_code == 201, created.text
        uuid = created.json()["uuid"]
        assert uuidlib.UUID(uuid).version == 4  # made when none is given
        assert created.json()["voided"] is False
        assert "retired" not in created.json()
        assert client.delete(f"{BASE}/relationship/{uuid}").status_code == 204
        assert client.get(f"{BASE}/relationship/{uuid}").json()["voided"] is True
        unvoided = client.post(f"{BASE}/relationship/{uuid}", json={"voided": False})
        assert unvoided.json()["voided"] is False
        assert unvoided.json()["personA"] == "person-a"
    assert [e.action for e in _events(node, "relationship")] == ["CREATED", "VOIDED", "UNVOIDED"]


@pytest.mark.postgres
def test_create_of_an_existing_uuid_is_an_idempotent_update(node: NodeHandle) -> None:
    body = {"uuid": "drug-1", "name": "Paracetamol 500mg", "concept": "c-para"}
    with node.client() as client:
        first = client.post(f"{BASE}/drug", json=body)
        again = client.post(f"{BASE}/drug", json=body)
        changed = client.post(f"{BASE}/drug", json={**body, "strength": "500mg"})
        assert (first.status_code, again.status_code, changed.status_code) == (201, 200, 200)
        assert changed.json()["uuid"] == "drug-1"
        assert changed.json()["strength"] == "500mg"
        client.delete(f"{BASE}/drug/drug-1", params={"purge": "true"})
        recreated = client.post(f"{BASE}/drug", json=body)
        assert recreated.status_code == 201
        assert "strength" not in recreated.json()  # a purged record is not merged into
    actions = [e.action for e in _events(node, "drug")]
    assert actions == ["CREATED", "UPDATED", "DELETED", "CREATED"]


def test_retired_true_on_update_retires_and_list_hides_it(node: NodeHandle) -> None:
    with node.client() as client:
        for i in range(3):
            client.post(f"{BASE}/privilege", json={"uuid": f"priv-{i}", "name": f"Priv {i}"})
        client.post(f"{BASE}/privilege/priv-1", json={"retired": True})
        active = client.get(f"{BASE}/privilege").json()["results"]
        everything = client.get(f"{BASE}/privilege", params={"includeAll": "true"}).json()
        full = client.get(f"{BASE}/privilege", params={"v": "full"}).json()["results"]
    assert [r["uuid"] for r in active] == ["priv-0", "priv-2"]
    assert [r["uuid"] for r in everything["results"]] == ["priv-0", "priv-1", "priv-2"]
    assert full[0]["name"] == "Priv 0"
    assert full[0]["retired"] is False
    actions = [e.action for e in _events(node, "privilege")]
    assert actions == ["CREATED", "CREATED", "CREATED", "RETIRED"]


def test_list_pages_with_limit_and_start_index(node: NodeHandle) -> None:
    with node.client() as client:
        for i in range(5):
            client.post(f"{BASE}/visittype", json={"uuid": f"vt-{i}", "name": f"Type {i}"})
        first = client.get(f"{BASE}/visittype", params={"limit": 2}).json()
        last = client.get(f"{BASE}/visittype", params={"limit": 2, "startIndex": 4}).json()
        follow = client.get(next(x["uri"] for x in first["links"] if x["rel"] == "next")).json()
        zero = client.get(f"{BASE}/visittype", params={"limit": 0})
    assert [r["uuid"] for r in first["results"]] == ["vt-0", "vt-1"]
    assert [r["uuid"] for r in follow["results"]] == ["vt-2", "vt-3"]
    assert [r["uuid"] for r in last["results"]] == ["vt-4"]
    assert [x["rel"] for x in last["links"]] == ["prev"]
    assert _error(zero, 400)["field"] == "limit"


@pytest.mark.postgres
def test_start_index_past_any_row_is_an_empty_page(node: NodeHandle) -> None:
    """SQLite refuses an OFFSET above 2**63-1: such a startIndex answered 500."""
    with node.client() as client:
        client.post(f"{BASE}/visittype", json={"name": "Clinic"})
        for start in (2**63 - 1, 2**63, 10**30):
            response = client.get(f"{BASE}/visittype", params={"startIndex": start, "limit": 5})
            assert response.status_code == 200, response.text
            assert response.json()["results"] == []


def test_form_drops_form_fields_and_resources(node: NodeHandle) -> None:
    body = {
        "uuid": "form-1",
        "name": "Vitals",
        "version": "1.0",
        "encounterType": {"uuid": "et-vitals"},
        "formFields": [{"uuid": "ff-1"}],
        "resources": [{"uuid": "r-1"}],
    }
    with node.client() as client:
        rep = client.post(f"{BASE}/form", json=body).json()
    assert "formFields" not in rep
    assert "resources" not in rep
    assert rep["encounterType"] == "et-vitals"


@pytest.mark.parametrize(
    ("resource", "body", "field"),
    [
        ("concept", {"version": "1"}, "name"),
        ("concept", {"names": []}, "names"),
        ("concept", {"names": [{"locale": "en"}]}, "names[0]"),
        ("visittype", {"description": "no name"}, "name"),
        ("visittype", {"name": 42}, "name"),
        ("visittype", {"name": "  "}, "name"),
        ("privilege", {}, "name"),
        ("program", {"name": "P", "concept": 7}, "concept"),
        ("drug", {"name": ["a"]}, "name"),
        ("form", {"name": "Vitals"}, "version"),
        ("relationship", {"personA": "a", "relationshipType": "t"}, "personB"),
        ("user", {"person": "p"}, "username"),
        ("user", {"username": "nurse", "roles": "Provider"}, "roles"),
        ("visittype", {"name": "V", "retired": "no"}, "retired"),
        ("visittype", {"name": "V", "uuid": "bad uuid!"}, "uuid"),
    ],
)
def test_invalid_bodies_get_400_naming_the_field(
    node: NodeHandle, resource: str, body: dict[str, Any], field: str
) -> None:
    with node.client() as client:
        error = _error(client.post(f"{BASE}/{resource}", json=body), 400)
    assert error["field"] == field
    assert field.split("[", maxsplit=1)[0] in error["message"]


def test_malformed_json_and_non_objects_get_400(node: NodeHandle) -> None:
    with node.client() as client:
        not_json = client.post(
            f"{BASE}/visittype", content=b"{nope", headers={"content-type": "application/json"}
        )
        a_list = client.post(f"{BASE}/visittype", json=[{"name": "V"}])
        empty = client.post(f"{BASE}/visittype", content=b"")
        client.post(f"{BASE}/visittype", json={"uuid": "vt-x", "name": "V"})
        wrong_uuid = client.post(f"{BASE}/visittype/vt-x", json={"uuid": "vt-y"})
        bad_update = client.post(f"{BASE}/visittype/vt-x", json={"name": 5})
        still = client.get(f"{BASE}/visittype/vt-x").json()
    assert "JSON" in _error(not_json, 400)["message"]
    assert "object" in _error(a_list, 400)["message"]
    assert "object" in _error(empty, 400)["message"]
    assert _error(wrong_uuid, 400)["field"] == "uuid"
    assert _error(bad_update, 400)["field"] == "name"
    assert still["name"] == "V"


def test_user_secrets_are_refused_and_never_echoed(node: NodeHandle) -> None:
    body = {
        "uuid": "user-1",
        "username": "nurse",
        "password": "Hunter2-Secret",
        "secretAnswer": "blue-whale",
    }
    with node.client() as client:
        refused = client.post(f"{BASE}/user", json=body)
        ok = client.post(f"{BASE}/user", json={"uuid": "user-1", "username": "nurse"})
        update = client.post(f"{BASE}/user/user-1", json={"password": "Hunter2-Secret"})
        got = client.get(f"{BASE}/user/user-1", params={"v": "full"})
    error = _error(refused, 400)
    assert "secrets are not accepted" in error["message"]
    assert "Hunter2" not in refused.text
    assert "blue-whale" not in refused.text
    assert ok.status_code == 201
    assert ok.json()["display"] == "nurse"
    assert _error(update, 400)["field"] == "password"
    assert "Hunter2" not in update.text
    assert "password" not in got.json()
    assert _stored_body(node, "user", "user-1") == {"uuid": "user-1", "username": "nurse"}
    assert [e.action for e in _events(node, "user")] == ["CREATED"]


def test_unknown_resources_and_missing_records_are_404(node: NodeHandle) -> None:
    with node.client() as client:
        unknown = client.get(f"{BASE}/spaceship")
        fhir_only = client.post(f"{BASE}/patient", json={"name": "x"})
        missing = client.get(f"{BASE}/concept/nope")
        update_missing = client.post(f"{BASE}/concept/nope", json={"version": "2"})
        delete_missing = client.delete(f"{BASE}/concept/nope")
        purge_missing = client.delete(f"{BASE}/concept/nope", params={"purge": ""})
    assert "spaceship" in _error(unknown, 404)["message"]
    _error(fhir_only, 404)
    for response in (missing, update_missing, delete_missing, purge_missing):
        _error(response, 404)
    assert _events(node, "concept") == []  # an update of a missing record creates nothing


def test_purged_record_cannot_be_updated_or_deleted_again(node: NodeHandle) -> None:
    with node.client() as client:
        client.post(f"{BASE}/visittype", json={"uuid": "vt-p", "name": "V"})
        client.delete(f"{BASE}/visittype/vt-p", params={"purge": ""})
        _error(client.post(f"{BASE}/visittype/vt-p", json={"name": "W"}), 404)
        _error(client.delete(f"{BASE}/visittype/vt-p"), 404)
        assert client.get(f"{BASE}/visittype", params={"includeAll": "true"}).json() == {
            "results": []
        }


def test_viewer_reads_but_may_not_write(node: NodeHandle) -> None:
    add_user(node, "viewer", "viewer")
    with node.client() as admin:
        admin.post(f"{BASE}/visittype", json={"uuid": "vt-v", "name": "V"})
    with as_user(node, "viewer") as viewer:
        assert viewer.get(f"{BASE}/visittype/vt-v").status_code == 200
        assert viewer.get(f"{BASE}/visittype").status_code == 200
        _error(viewer.post(f"{BASE}/visittype", json={"name": "W"}), 403)
        _error(viewer.post(f"{BASE}/visittype/vt-v", json={"name": "W"}), 403)
        _error(viewer.delete(f"{BASE}/visittype/vt-v"), 403)
    assert len(_events(node, "visittype")) == 1


def test_requests_without_valid_credentials_get_401(node: NodeHandle) -> None:
    anonymous = httpx.get(f"{node.base_url}{BASE}/concept", timeout=10)
    wrong = httpx.post(
        f"{node.base_url}{BASE}/concept", json=CONCEPT_BODY, auth=("admin", "wrong"), timeout=10
    )
    unknown_anonymous = httpx.get(f"{node.base_url}{BASE}/spaceship", timeout=10)
    for response in (anonymous, wrong, unknown_anonymous):
        _error(response, 401)
        assert response.headers["www-authenticate"].startswith("Basic")


def test_child_writes_carry_origin_and_via(node: NodeHandle) -> None:
    add_user(node, "clinic-b", "child", "clinic-b")
    with as_user(node, "clinic-b") as child:
        relayed = child.post(
            f"{BASE}/visittype",
            json={"uuid": "vt-c", "name": "V"},
            headers={"X-Fhirsync-Origin": "clinic-c"},
        )
        own = child.post(f"{BASE}/visittype/vt-c", json={"name": "W"})
        bad = child.delete(f"{BASE}/visittype/vt-c", headers={"X-Fhirsync-Origin": "no spaces"})
    assert relayed.status_code == 201
    assert own.status_code == 200
    _error(bad, 400)
    got = [(e.action, e.origin, e.via) for e in _events(node, "visittype")]
    assert got == [
        ("CREATED", "clinic-c", "child:clinic-b"),
        ("UPDATED", "clinic-b", "child:clinic-b"),
    ]


@pytest.mark.postgres
def test_concurrent_creates_of_one_uuid_merge_without_losing_fields(node: NodeHandle) -> None:
    # Several rounds: a merge that read a record created after its lock was taken (PostgreSQL,
    # read committed) failed with 412 in about one round in twenty.
    rounds = 8
    for round_ in range(rounds):
        uuid = f"vt-race-{round_}"

        def post(i: int, uuid: str = uuid) -> tuple[int, str]:
            body = {"uuid": uuid, "name": "Race", f"field{i}": str(i)}
            with node.client() as client:
                answer = client.post(f"{BASE}/visittype", json=body)
                return answer.status_code, answer.text

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(8)))
        assert sorted(code for code, _text in answers) == [200] * 7 + [201], answers
        with node.client() as client:
            rep = client.get(f"{BASE}/visittype/{uuid}").json()
        assert {rep[f"field{i}"] for i in range(8)} == {str(i) for i in range(8)}
    actions = [e.action for e in _events(node, "visittype")]
    assert actions == (["CREATED"] + ["UPDATED"] * 7) * rounds


@pytest.mark.postgres
@pytest.mark.parametrize("uuid", ["c" * 10 + "\n", "a" * 64 + "\n"])
def test_a_uuid_ending_in_a_newline_is_refused(node: NodeHandle, uuid: str) -> None:
    # It was stored as given (a record no URL reaches); one of 64 characters before the newline
    # overflowed records.uuid and PostgreSQL answered 500.
    with node.client() as client:
        answer = client.post(f"{BASE}/visittype", json={"uuid": uuid, "name": "Outpatient"})
    assert "uuid must be" in _error(answer, 400)["message"]
    assert _events(node, "visittype") == []
