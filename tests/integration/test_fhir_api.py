"""The FHIR R4 API through a running node: CRUD, search, errors, auth and the OpenMRS samples."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from tests.integration.api_support import FHIR_JSON, add_user, outcome_issue, patient

from fhirsync import categories
from fhirsync.store import records as store
from fhirsync.testing.servers import NodeHandle

NodeFactory = Callable[..., NodeHandle]


BASE = "/ws/fhir2/R4"
_STU3_ONLY = {"ObservationWebTest_create_r3.json", "ProcedureRequestWebTest_update.json"}


def stored(node: NodeHandle, category: str, uuid: str) -> Any:
    _config, db = node.open()
    try:
        with db.read() as conn:
            return store.get(conn, category, uuid)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_create_read_update_delete(client: httpx.Client) -> None:
    created = client.post(f"{BASE}/Patient", json=patient(id="client-chosen"))
    assert created.status_code == 201, created.text
    body = created.json()
    pid = body["id"]
    assert pid != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"] == f"{BASE}/Patient/{pid}/_history/1"

    read = client.get(f"{BASE}/Patient/{pid}")
    assert read.status_code == 200
    assert read.headers["content-type"].startswith(FHIR_JSON)
    assert read.headers["etag"] == 'W/"1"'
    assert read.headers["last-modified"].endswith("GMT")
    assert read.content == created.content  # served exactly as stored
    assert read.json()["meta"]["lastUpdated"].endswith("Z")

    changed = {**read.json(), "gender": "other"}
    updated = client.put(f"{BASE}/Patient/{pid}", json=changed, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["etag"] == 'W/"2"'

    stale = client.put(f"{BASE}/Patient/{pid}", json=changed, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert outcome_issue(stale)["code"] == "conflict"

    assert client.delete(f"{BASE}/Patient/{pid}").status_code == 204
    gone = client.get(f"{BASE}/Patient/{pid}")
    assert gone.status_code == 410
    assert outcome_issue(gone)["code"] == "deleted"
    assert client.delete(f"{BASE}/Patient/{pid}").status_code == 204  # idempotent

    revived = client.put(f"{BASE}/Patient/{pid}", json=changed)
    assert revived.status_code == 200
    assert revived.json()["meta"]["versionId"] == "4"
    assert client.get(f"{BASE}/Patient/{pid}").status_code == 200


def test_put_upserts_with_the_client_id(client: httpx.Client, node: NodeHandle) -> None:
    pid = "7d1f4b8e-3c2a-4f5b-9e6d-1a2b3c4d5e6f"
    first = client.put(f"{BASE}/Patient/{pid}", json=patient())
    assert first.status_code == 201, first.text
    assert first.json()["id"] == pid
    assert first.headers["location"] == f"{BASE}/Patient/{pid}/_history/1"
    again = client.put(f"{BASE}/Patient/{pid}", json=patient(id=pid, gender="female"))
    assert again.status_code == 200
    unchanged = client.put(f"{BASE}/Patient/{pid}", json=patient(id=pid, gender="female"))
    assert unchanged.json()["meta"]["versionId"] == "2"  # same content: no new version

    mismatch = client.put(f"{BASE}/Patient/{pid}", json=patient(id="another-id"))
    assert mismatch.status_code == 400
    assert outcome_issue(mismatch)["expression"] == ["Patient.id"]
    bad_id = client.put(f"{BASE}/Patient/not%20an%20id", json=patient())
    assert bad_id.status_code == 400

    record = stored(node, "patient", pid)
    assert record.origin == "node-a"


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["put", "transaction", "batch"])
def test_concurrent_puts_of_one_new_id_all_succeed(node: NodeHandle, how: str) -> None:
    # A client retrying a PUT whose answer it did not wait for, or two children sending one new
    # record: on PostgreSQL every writer found no record and inserted it, and all but the first
    # failed on the unique key with a 500 (8 of 30 PUTs, 19 of 30 transaction Bundles in a
    # trial). SQLite serialises the writers, so the later ones updated the record.
    writers, rounds = 6, 4

    def request(client: httpx.Client, pid: str, gender: str) -> tuple[int, str]:
        body = patient(id=pid, gender=gender)
        if how == "put":
            answer = client.put(f"{BASE}/Patient/{pid}", json=body)
            return answer.status_code, answer.text
        entry = {"request": {"method": "PUT", "url": f"Patient/{pid}"}, "resource": body}
        bundle = {"resourceType": "Bundle", "type": how, "entry": [entry]}
        answer = client.post(BASE, json=bundle)
        if answer.status_code != 200:
            return answer.status_code, answer.text
        line = answer.json()["entry"][0]["response"]["status"]
        return int(line.split()[0]), answer.text

    for n in range(rounds):
        pid = f"race-{how}-{n}"
        barrier = threading.Barrier(writers)
        answers: list[tuple[int, str]] = []

        def write(
            gender: str,
            pid: str = pid,
            barrier: threading.Barrier = barrier,
            answers: list[tuple[int, str]] = answers,
        ) -> None:
            with node.client() as client:
                barrier.wait(timeout=30)
                answers.append(request(client, pid, gender))

        threads = [
            threading.Thread(target=write, args=(("male", "female", "other")[i % 3],))
            for i in range(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(status for status, _text in answers if status not in (200, 201)) == [], [
            text for status, text in answers if status not in (200, 201)
        ]
        assert [status for status, _text in answers].count(201) == 1
        record = stored(node, "patient", pid)
        assert record is not None and record.state == "active"


def test_retired_category_answers_410(client: httpx.Client, node: NodeHandle) -> None:
    loc = client.post(f"{BASE}/Location", json={"resourceType": "Location", "name": "Ward 1"})
    lid = loc.json()["id"]
    assert client.delete(f"{BASE}/Location/{lid}").status_code == 204
    assert client.get(f"{BASE}/Location/{lid}").status_code == 410
    assert stored(node, "location", lid).state == "retired"


def test_not_found_and_unknown_types(client: httpx.Client) -> None:
    missing = client.get(f"{BASE}/Patient/does-not-exist")
    assert missing.status_code == 404
    assert outcome_issue(missing)["code"] == "not-found"
    assert client.delete(f"{BASE}/Patient/does-not-exist").status_code == 404
    for response in (
        client.get(f"{BASE}/Organization/1"),
        client.get(f"{BASE}/Spaceship"),
        client.post(f"{BASE}/Organization", json={"resourceType": "Organization"}),
        client.put(f"{BASE}/Spaceship/1", json={"resourceType": "Spaceship"}),
    ):
        assert response.status_code == 404, response.text
        assert outcome_issue(response)["code"] == "not-found"


@pytest.mark.parametrize(
    ("content", "element", "words"),
    [
        (b"{not json", "Patient", "not valid JSON"),
        (b"", "Patient", "empty"),
        (b"[1, 2]", "Patient", "JSON object"),
        (json.dumps({"resourceType": "Person"}).encode(), "resourceType", "expected 'Patient'"),
        (json.dumps(patient(gender="femme")).encode(), "Patient.gender", "femme"),
        (json.dumps(patient(birthDate="soon")).encode(), "Patient.birthDate", "Date"),
        (json.dumps(patient(shoeSize=44)).encode(), "Patient.shoeSize", "Unknown element"),
        (
            json.dumps(patient(name=[{"given": [1]}])).encode(),
            "Patient.name[0].given[0]",
            "string",
        ),
    ],
)
def test_invalid_input_names_the_element(
    client: httpx.Client, content: bytes, element: str, words: str
) -> None:
    headers = {"Content-Type": FHIR_JSON}
    for response in (
        client.post(f"{BASE}/Patient", content=content, headers=headers),
        client.put(f"{BASE}/Patient/p-1", content=content, headers=headers),
    ):
        assert response.status_code == 400, response.text
        found = outcome_issue(response)
        assert found["code"] == "invalid"
        assert found["expression"] == [element]
        assert words in found["diagnostics"]


def test_contained_resource_of_no_known_type_is_400(client: httpx.Client, node: NodeHandle) -> None:
    for contained, element in (
        ({"resourceType": "Spaceship"}, "Patient.contained[0].resourceType"),
        ({"id": "no-type"}, "Patient.contained[0].resourceType"),
    ):
        body = patient(contained=[contained])
        for response in (
            client.post(f"{BASE}/Patient", json=body),
            client.put(f"{BASE}/Patient/p-c", json=body),
        ):
            assert response.status_code == 400, response.text
            assert outcome_issue(response)["expression"] == [element]
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "POST", "url": "Patient"},
                "resource": patient(contained=[{"resourceType": "Spaceship"}]),
            }
        ],
    }
    response = client.post(BASE, json=transaction)
    assert response.status_code == 400, response.text
    expression = ["Bundle.entry[0].resource.contained[0].resourceType"]
    assert outcome_issue(response)["expression"] == expression
    _config, db = node.open()
    try:
        with db.read() as conn:
            assert store.counts_by_category(conn) == {}  # nothing was written
    finally:
        db.dispose()


def test_bad_if_match_is_400(client: httpx.Client) -> None:
    response = client.put(f"{BASE}/Patient/p-2", json=patient(), headers={"If-Match": "yesterday"})
    assert response.status_code == 400
    assert (
        client.put(f"{BASE}/Patient/p-2", json=patient(), headers={"If-Match": 'W/"1"'}).status_code
        == 412
    )  # an If-Match on a missing record is stale too


def test_oversized_body_is_413(node_factory: NodeFactory) -> None:
    small = node_factory("small", extra_settings={"max_body_bytes": 2048})
    big = patient(text={"status": "generated", "div": "<div>" + "x" * 4000 + "</div>"})
    with small.client() as client:
        response = client.post(f"{BASE}/Patient", json=big)
        assert response.status_code == 413
        assert outcome_issue(response)["code"] == "too-costly"
        assert client.post(f"{BASE}/Patient", json=patient()).status_code == 201


@pytest.mark.postgres
def test_search_by_id_last_updated_and_paging(client: httpx.Client) -> None:
    ids = [client.post(f"{BASE}/Patient", json=patient()).json()["id"] for _ in range(5)]
    client.delete(f"{BASE}/Patient/{ids[4]}")

    everything = client.get(f"{BASE}/Patient", params={"_count": 2})
    assert everything.status_code == 200
    seen: list[str] = []
    page = everything.json()
    pages = 0
    while True:
        pages += 1
        assert page["type"] == "searchset"
        assert "total" not in page
        seen += [e["resource"]["id"] for e in page["entry"]]
        for entry in page["entry"]:
            assert entry["fullUrl"].endswith(f"{BASE}/Patient/{entry['resource']['id']}")
        links = {link["relation"]: link["url"] for link in page["link"]}
        assert "self" in links
        if "next" not in links:
            break
        page = client.get(links["next"]).json()
    assert seen == ids[:4]  # only active records, in creation order
    assert pages == 2

    by_id = client.get(f"{BASE}/Patient", params={"_id": f"{ids[1]},{ids[3]},{ids[4]},nope"})
    assert sorted(e["resource"]["id"] for e in by_id.json()["entry"]) == sorted([ids[1], ids[3]])
    assert [link["relation"] for link in by_id.json()["link"]] == ["self"]
    paged = client.get(f"{BASE}/Patient", params={"_id": ",".join(ids), "_count": 3}).json()
    assert len(paged["entry"]) == 3
    rest = client.get(next(x["url"] for x in paged["link"] if x["relation"] == "next")).json()
    assert [e["resource"]["id"] for e in paged["entry"] + rest["entry"]] == ids[:4]

    later = client.get(f"{BASE}/Patient", params=[("_lastUpdated", "ge2000-01-01")])
    assert len(later.json()["entry"]) == 4
    window = client.get(
        f"{BASE}/Patient", params=[("_lastUpdated", "gt2000"), ("_lastUpdated", "lt2000-06")]
    )
    assert window.json()["entry"] == []
    future = client.get(f"{BASE}/Patient", params={"_lastUpdated": "ge2999-01-01T00:00:00Z"})
    assert future.json()["entry"] == []
    raw_plus = client.get(f"{BASE}/Patient?_lastUpdated=lt2999-01-01T00:00:00.000+02:00")
    assert len(raw_plus.json()["entry"]) == 4
    minute = client.get(f"{BASE}/Patient", params={"_lastUpdated": "le2001-02-03T04:05"})
    assert minute.json()["entry"] == []


def test_search_errors_and_limits(node_factory: NodeFactory) -> None:
    node = node_factory("capped", extra_settings={"search_max_count": 3})
    with node.client() as client:
        for _ in range(4):
            client.post(f"{BASE}/Patient", json=patient())
        capped = client.get(f"{BASE}/Patient", params={"_count": 500}).json()
        assert len(capped["entry"]) == 3
        assert any(link["relation"] == "next" for link in capped["link"])
        for params, element in (
            ({"name": "Mensah"}, "name"),
            ({"_count": "many"}, "_count"),
            ({"_lastUpdated": "ge-yesterday"}, "_lastUpdated"),
            ({"_id": "bad id!"}, "_id"),
        ):
            response = client.get(f"{BASE}/Patient", params=params)
            assert response.status_code == 400, params
            assert outcome_issue(response)["expression"] == [element]
            assert element in outcome_issue(response)["diagnostics"]


@pytest.mark.postgres  # its 32-bit row ids refused a cursor SQLite's 64-bit ones took: a 500
def test_search_values_at_the_edges_of_their_range(client: httpx.Client) -> None:
    """Values a client may send that Python or SQLite cannot hold as they are: answered, not 500."""
    pid = client.post(f"{BASE}/Patient", json=patient()).json()["id"]

    def found(params: dict[str, str]) -> list[str]:
        response = client.get(f"{BASE}/Patient", params=params)
        assert response.status_code == 200, (params, response.text)
        return [e["resource"]["id"] for e in response.json()["entry"]]

    # The last instants FHIR can name (year 9999) and the first (year 1), in any time zone.
    assert found({"_lastUpdated": "le9999-12-31"}) == [pid]
    assert found({"_lastUpdated": "ge0001-01-01T00:00:00+14:00"}) == [pid]
    for value in ("9999-12", "ge9999-12-31T23:59:59.999Z", "ge9999-12-31T23:59:59-14:00"):
        assert found({"_lastUpdated": value}) == []
    assert found({"_lastUpdated": "lt0001-01-01T00:00:00+14:00"}) == []
    # A cursor past any row id a database can hold is past the last match.
    for cursor in (str(2**31), str(2**63), "9" * 30):
        assert found({"_cursor": cursor}) == []

    # "²" is a digit to str.isdigit() but no number to int(): refused like any other non-number.
    for name in ("_count", "_cursor"):
        response = client.get(f"{BASE}/Patient", params={name: "²"})
        assert response.status_code == 400, response.text
        assert outcome_issue(response)["expression"] == [name]
    headers = {"If-Match": 'W/"²"'.encode("latin-1")}  # how a server decodes header bytes
    for response in (
        client.put(f"{BASE}/Patient/{pid}", json=patient(), headers=headers),
        client.delete(f"{BASE}/Patient/{pid}", headers=headers),
    ):
        assert response.status_code == 400, response.text
        assert "If-Match" in outcome_issue(response)["diagnostics"]
    assert client.get(f"{BASE}/Patient/{pid}").json()["meta"]["versionId"] == "1"


@pytest.mark.postgres
def test_search_by_too_many_ids_is_400(client: httpx.Client) -> None:
    """PostgreSQL takes at most 65,535 parameters in a query: 70,000 ids answered 500 there (a
    Bundle GET entry carries them past any URL limit), so _id takes at most 10,000 everywhere."""
    pid = client.post(f"{BASE}/Patient", json=patient()).json()["id"]
    many = ",".join([pid, *(f"id-{i}" for i in range(70_000))])
    for kind in ("batch", "transaction"):
        search = {"request": {"method": "GET", "url": f"Patient?_id={many}"}}
        response = client.post(
            BASE, json={"resourceType": "Bundle", "type": kind, "entry": [search]}
        )
        if kind == "batch":
            answered = response.json()["entry"][0]["response"]
            assert answered["status"] == "400 Bad Request", answered
            issue = answered["outcome"]["issue"][0]
        else:
            assert response.status_code == 400, response.text
            issue = outcome_issue(response)
        assert "10000" in issue["diagnostics"]
    just_enough = ",".join([pid, *(f"{i}" for i in range(9_999))])
    search = {"request": {"method": "GET", "url": f"Patient?_id={just_enough}"}}
    response = client.post(
        BASE, json={"resourceType": "Bundle", "type": "batch", "entry": [search]}
    )
    found = response.json()["entry"][0]["resource"]["entry"]
    assert [e["resource"]["id"] for e in found] == [pid]


def test_encounter_covers_visits_and_encounters(
    client: httpx.Client, node: NodeHandle, reference_dir: Path
) -> None:
    samples = reference_dir / "openmrs" / "fhir2-r4-samples"
    visit = json.loads((samples / "VisitWebTest_create.json").read_bytes())
    encounter = json.loads((samples / "EncounterWebTest_create.json").read_bytes())
    vid = client.post(f"{BASE}/Encounter", json=visit).json()["id"]
    eid = client.post(f"{BASE}/Encounter", json=encounter).json()["id"]
    assert stored(node, "visit", vid) is not None
    assert stored(node, "encounter", eid) is not None
    found = client.get(f"{BASE}/Encounter", params={"_id": f"{vid},{eid}"}).json()
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted([vid, eid])
    # An untagged update keeps a visit a visit; a tag naming the other category is refused.
    untagged = {k: v for k, v in visit.items() if k != "meta"}
    assert client.put(f"{BASE}/Encounter/{vid}", json=untagged).status_code == 200
    assert stored(node, "visit", vid).version == 2
    retag = client.put(f"{BASE}/Encounter/{eid}", json={**encounter, "meta": visit["meta"]})
    assert retag.status_code == 400
    assert outcome_issue(retag)["expression"] == ["Encounter.meta.tag"]


def test_every_r4_sample_is_accepted(client: httpx.Client, reference_dir: Path) -> None:
    samples = sorted((reference_dir / "openmrs" / "fhir2-r4-samples").glob("*.json"))
    accepted = 0
    for path in samples:
        if path.name in _STU3_ONLY:
            continue
        resource = json.loads(path.read_bytes())
        kind = resource["resourceType"]
        created = client.post(f"{BASE}/{kind}", content=path.read_bytes())
        assert created.status_code == 201, (path.name, created.text)
        rid = created.json()["id"]
        put = client.put(f"{BASE}/{kind}/{rid}", json={**resource, "id": rid})
        assert put.status_code in (200, 201), (path.name, put.text)
        fresh = f"{kind[:4].lower()}-{accepted}"
        assert client.put(f"{BASE}/{kind}/{fresh}", content=path.read_bytes()).status_code in (
            201,
            400,  # a sample that carries its own id must match the URL
        )
        assert client.get(f"{BASE}/{kind}/{rid}").status_code == 200
        accepted += 1
    assert accepted == 10


def test_lone_identifier_object_is_stored_as_a_list(
    client: httpx.Client, reference_dir: Path
) -> None:
    path = reference_dir / "openmrs" / "fhir2-r4-samples" / "PatientWebTest_create.json"
    created = client.post(f"{BASE}/Patient", content=path.read_bytes()).json()
    assert isinstance(created["identifier"], list)
    assert created["identifier"][0]["value"] == "4444-6"


def test_metadata(client: httpx.Client) -> None:
    response = client.get(f"{BASE}/metadata")
    assert response.status_code == 200
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    served = {r["type"] for r in statement["rest"][0]["resource"]}
    assert served == set(categories.FHIR_TYPES)
    codes = {i["code"] for i in statement["rest"][0]["resource"][0]["interaction"]}
    assert codes == {"read", "create", "update", "delete", "search-type"}


def test_viewer_reads_but_cannot_write(client: httpx.Client, node: NodeHandle) -> None:
    pid = client.post(f"{BASE}/Patient", json=patient()).json()["id"]
    add_user(node, "viewer", "viewer")
    with httpx.Client(base_url=node.base_url, auth=("viewer", "viewer-password")) as viewer:
        assert viewer.get(f"{BASE}/Patient/{pid}").status_code == 200
        assert viewer.get(f"{BASE}/Patient").status_code == 200
        for response in (
            viewer.post(f"{BASE}/Patient", json=patient()),
            viewer.put(f"{BASE}/Patient/{pid}", json=patient()),
            viewer.delete(f"{BASE}/Patient/{pid}"),
        ):
            assert response.status_code == 403
            assert outcome_issue(response)["code"] == "forbidden"


def test_unauthenticated_is_401_without_revealing_users(node: NodeHandle) -> None:
    answers = []
    for auth in (None, ("nobody", "whatever-password"), ("admin", "wrong-password")):
        response = httpx.get(f"{node.base_url}{BASE}/Patient", auth=auth)
        assert response.status_code == 401
        assert outcome_issue(response)["code"] == "login"
        answers.append((response.content, response.headers.get("www-authenticate")))
    assert answers[1] == answers[2]
    assert httpx.get(f"{node.base_url}{BASE}/metadata").status_code == 401


def test_child_writes_carry_origin_and_via(node: NodeHandle) -> None:
    add_user(node, "clinic-7", "child", "clinic-7")
    with httpx.Client(base_url=node.base_url, auth=("clinic-7", "clinic-7-password")) as child:
        own = child.post(f"{BASE}/Patient", json=patient()).json()["id"]
        relayed = child.put(
            f"{BASE}/Patient/relayed-1", json=patient(), headers={"X-Fhirsync-Origin": "clinic-9"}
        )
        assert relayed.status_code == 201
    first = stored(node, "patient", own)
    assert first.origin == "clinic-7"
    second = stored(node, "patient", "relayed-1")
    assert second.origin == "clinic-9"
    _config, db = node.open()
    try:
        with db.read() as conn:
            from sqlalchemy import select

            from fhirsync.store.tables import records

            via = conn.execute(select(records.c.via).where(records.c.uuid == "relayed-1")).scalar()
    finally:
        db.dispose()
    assert via == "child:clinic-7"
