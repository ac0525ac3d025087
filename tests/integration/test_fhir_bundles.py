"""Batch and transaction Bundles posted to the FHIR base of a running node."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from tests.integration.api_support import add_user, as_user, outcome_issue

from fhirsync.store.tables import events, records
from fhirsync.testing.servers import NodeHandle

BASE = "/ws/fhir2/R4"


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "gender": "female", "birthDate": "1990-01-02", **extra}


def bundle(kind: str, *entries: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def entry(method: str, url: str, resource: dict[str, Any] | None = None, **extra: Any) -> Any:
    out: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        out["resource"] = resource
    if "if_match" in extra:
        out["request"]["ifMatch"] = extra.pop("if_match")
    out.update(extra)
    return out


def counts(node: NodeHandle) -> tuple[int, int]:
    _config, db = node.open()
    try:
        with db.read() as conn:
            n_records = conn.execute(select(func.count()).select_from(records)).scalar_one()
            n_events = conn.execute(select(func.count()).select_from(events)).scalar_one()
            return int(n_records), int(n_events)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_transaction_resolves_urn_uuid_references(client: httpx.Client) -> None:
    kept_id = "4b1c2d3e-0000-4000-8000-00000000abcd"
    posted = bundle(
        "transaction",
        entry("POST", "Patient", patient(), fullUrl="urn:uuid:p-1"),
        entry(
            "POST",
            "Encounter",
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": "urn:uuid:p-1"},
            },
            fullUrl="urn:uuid:e-1",
        ),
        entry(
            "PUT",
            f"Observation/{kept_id}",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": "urn:uuid:p-1"},
                "encounter": {"reference": "urn:uuid:e-1"},
                "valueQuantity": {"value": 72, "unit": "/min"},
            },
            fullUrl="urn:uuid:o-1",
        ),
    )
    response = client.post(BASE, json=posted)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["201 Created", "201 Created", "201 Created"]
    locations = [e["response"]["location"] for e in answer["entry"]]
    pid = locations[0].split("/")[1]
    eid = locations[1].split("/")[1]
    assert locations[2] == f"Observation/{kept_id}/_history/1"
    assert answer["entry"][0]["response"]["etag"] == 'W/"1"'

    obs = client.get(f"{BASE}/Observation/{kept_id}").json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"
    assert obs["encounter"]["reference"] == f"Encounter/{eid}"
    enc = client.get(f"{BASE}/Encounter/{eid}").json()
    assert enc["subject"]["reference"] == f"Patient/{pid}"


@pytest.mark.postgres
def test_transaction_is_all_or_nothing(client: httpx.Client, node: NodeHandle) -> None:
    existing = client.put(f"{BASE}/Patient/p-keep", json=patient()).json()
    before = counts(node)

    invalid = bundle(
        "transaction",
        entry("POST", "Patient", patient()),
        entry("PUT", "Patient/p-keep", patient(gender="femme")),
    )
    response = client.post(BASE, json=invalid)
    assert response.status_code == 400
    found = outcome_issue(response)
    assert found["expression"] == ["Bundle.entry[1].resource.gender"]
    assert "Bundle.entry[1]" in found["diagnostics"]
    assert counts(node) == before

    stale = bundle(
        "transaction",
        entry("POST", "Patient", patient()),
        entry("PUT", "Patient/p-keep", patient(gender="male"), if_match='W/"7"'),
    )
    response = client.post(f"{BASE}/", json=stale)
    assert response.status_code == 412
    assert counts(node) == before

    missing = bundle(
        "transaction",
        entry("DELETE", "Patient/p-keep"),
        entry("DELETE", "Patient/never-existed"),
    )
    response = client.post(BASE, json=missing)
    assert response.status_code == 404
    assert counts(node) == before
    assert client.get(f"{BASE}/Patient/p-keep").json() == existing

    wrong_type = bundle("transaction", entry("POST", "Patient", {"resourceType": "Person"}))
    response = client.post(BASE, json=wrong_type)
    assert response.status_code == 400
    assert outcome_issue(response)["expression"] == ["Bundle.entry[0].resource.resourceType"]

    unknown = bundle("transaction", entry("POST", "Organization", {"resourceType": "Organization"}))
    assert client.post(BASE, json=unknown).status_code == 404
    assert counts(node) == before


def test_transaction_delete_get_and_duplicates(client: httpx.Client) -> None:
    client.put(f"{BASE}/Patient/p-del", json=patient())
    client.put(f"{BASE}/Patient/p-read", json=patient())
    mixed = bundle(
        "transaction",
        entry("GET", "Patient/p-read"),
        entry("DELETE", "Patient/p-del"),
        entry("GET", "Patient?_id=p-read,p-del"),
    )
    answer = client.post(BASE, json=mixed).json()
    assert [e["response"]["status"] for e in answer["entry"]] == [
        "200 OK",
        "204 No Content",
        "200 OK",
    ]
    assert answer["entry"][0]["resource"]["id"] == "p-read"
    searchset = answer["entry"][2]["resource"]
    assert [e["resource"]["id"] for e in searchset["entry"]] == ["p-read"]
    assert client.get(f"{BASE}/Patient/p-del").status_code == 410

    twice = bundle(
        "transaction",
        entry("PUT", "Patient/p-x", patient()),
        entry("PUT", "Patient/p-x", patient()),
    )
    response = client.post(BASE, json=twice)
    assert response.status_code == 400
    assert "twice" in outcome_issue(response)["diagnostics"]


@pytest.mark.postgres
def test_batch_processes_each_entry_on_its_own(client: httpx.Client, node: NodeHandle) -> None:
    client.put(f"{BASE}/Patient/p-b", json=patient())
    posted = bundle(
        "batch",
        entry("POST", "Patient", patient()),
        entry("PUT", "Patient/p-b", patient(gender="femme")),
        entry("GET", "Patient/p-b"),
        entry("GET", "Patient/absent"),
        entry("PUT", "Patient/p-b", patient(gender="male"), if_match='W/"5"'),
        entry("PUT", "Patient/p-b", patient(gender="male"), if_match='W/"1"'),
        entry("DELETE", "Patient/p-b"),
        entry("PATCH", "Patient/p-b"),
        "not an entry",
    )
    response = client.post(BASE, json=posted)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "batch-response"
    results = [e["response"] for e in answer["entry"]]
    assert [r["status"] for r in results] == [
        "201 Created",
        "400 Bad Request",
        "200 OK",
        "404 Not Found",
        "412 Precondition Failed",
        "200 OK",
        "204 No Content",
        "400 Bad Request",
        "400 Bad Request",
    ]
    bad = results[1]["outcome"]
    assert bad["resourceType"] == "OperationOutcome"
    assert bad["issue"][0]["expression"] == ["Bundle.entry[1].resource.gender"]
    assert results[5]["etag"] == 'W/"2"'
    assert answer["entry"][2]["resource"]["gender"] == "female"
    assert client.get(f"{BASE}/Patient/p-b").status_code == 410


@pytest.mark.parametrize(
    ("content", "status", "element"),
    [
        (b"{oops", 400, "Bundle"),
        (b"[]", 400, "Bundle"),
        (b'{"resourceType": "Patient"}', 400, "resourceType"),
        (b'{"resourceType": "Bundle", "type": "collection"}', 400, "Bundle.type"),
        (b'{"resourceType": "Bundle", "type": "batch", "entry": {}}', 400, "Bundle.entry"),
        (
            b'{"resourceType": "Bundle", "type": "transaction", '
            b'"entry": [{"request": {"method": "POST", "url": "Patient"}}]}',
            400,
            "Bundle.entry[0].resource",
        ),
        (
            b'{"resourceType": "Bundle", "type": "transaction", '
            b'"entry": [{"request": {"method": "PUT", "url": "Patient?identifier=1"}, '
            b'"resource": {"resourceType": "Patient"}}]}',
            400,
            "Bundle.entry[0].request.url",
        ),
    ],
)
def test_malformed_bundles(client: httpx.Client, content: bytes, status: int, element: str) -> None:
    response = client.post(BASE, content=content, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == status, response.text
    assert outcome_issue(response)["expression"] == [element]


def test_malformed_entries_are_named_and_write_nothing(
    client: httpx.Client, node: NodeHandle
) -> None:
    """Each malformed entry is answered naming the entry (and its element); a transaction then
    writes nothing, and a batch answers that entry alone."""
    client.put(f"{BASE}/Patient/p-m", json=patient())
    before = counts(node)
    urn = "urn:uuid:0c3f6a4e-2b1d-4f5e-9a7b-1c2d3e4f5a6b"
    cases: list[tuple[list[Any], int, str | None]] = [
        ([entry(["POST"], "Patient", patient())], 400, "Bundle.entry[0].request.method"),
        ([entry({"m": 1}, "Patient", patient())], 400, "Bundle.entry[0].request.method"),
        # A precondition that cannot be read must not be dropped: the write would go through.
        (
            [entry("PUT", "Patient/p-m", patient(), if_match=1)],
            400,
            "Bundle.entry[0].request.ifMatch",
        ),
        ([entry("DELETE", "Patient/p-m", if_match="yes")], 400, "Bundle.entry[0].request.ifMatch"),
        ([entry("PUT", "Patient/bad$id", patient())], 400, "Bundle.entry[0].request.url"),
        ([entry("GET", "Spaceship/1")], 404, None),
        (
            [
                entry("POST", "Patient", patient(), fullUrl=urn),
                entry("POST", "Patient", patient(gender="male"), fullUrl=urn),
            ],
            400,
            "Bundle.entry[1].fullUrl",
        ),
    ]
    for entries, status, element in cases:
        response = client.post(BASE, json=bundle("transaction", *entries))
        assert response.status_code == status, response.text
        issue = outcome_issue(response)
        assert issue.get("expression") == ([element] if element else None), issue
        named = issue["diagnostics"] + str(issue.get("expression"))
        assert f"Bundle.entry[{len(entries) - 1}]" in named, issue
        assert counts(node) == before
    for entries, status, element in cases[:-1]:
        answered = client.post(BASE, json=bundle("batch", *entries)).json()["entry"][0]
        assert answered["response"]["status"].startswith(str(status)), answered
        issue = answered["response"]["outcome"]["issue"][0]
        assert issue.get("expression") == ([element] if element else None), issue
    assert counts(node) == before
    assert client.get(f"{BASE}/Patient/p-m").json()["meta"]["versionId"] == "1"


def test_viewer_may_only_read_through_bundles(client: httpx.Client, node: NodeHandle) -> None:
    client.put(f"{BASE}/Patient/p-v", json=patient())
    add_user(node, "viewer", "viewer")
    with as_user(node, "viewer") as viewer:
        reads = viewer.post(BASE, json=bundle("batch", entry("GET", "Patient/p-v")))
        assert reads.status_code == 200
        assert reads.json()["entry"][0]["resource"]["id"] == "p-v"
        writes = viewer.post(BASE, json=bundle("transaction", entry("DELETE", "Patient/p-v")))
        assert writes.status_code == 403
        batch = viewer.post(BASE, json=bundle("batch", entry("DELETE", "Patient/p-v")))
        assert batch.json()["entry"][0]["response"]["status"] == "403 Forbidden"
    assert client.get(f"{BASE}/Patient/p-v").status_code == 200
