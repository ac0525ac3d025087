"""The parent's side: child accounts bound to instance ids, the whitelist, and the safe proxy."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from tests.integration.api_support import add_user, as_user, patient

from fhirsync.node import update_sync2
from fhirsync.store import children
from fhirsync.store import records as store
from fhirsync.testing.servers import NodeHandle

NodeFactory = Callable[..., NodeHandle]
FHIR = "/ws/fhir2/R4"


def wrapper(url: str, method: str = "PUT", body: Any = None, instance: str = "clinic-a") -> bytes:
    request: dict[str, Any] = {"method": method, "url": url}
    if body is not None:
        request["body"] = orjson.dumps(body).decode()
    return orjson.dumps(
        {
            "instanceId": instance,
            "clientName": "fhir",
            "className": "org.hl7.fhir.dstu3.model.Patient",
            "request": request,
        }
    )


def via_and_origin(node: NodeHandle, uuid: str) -> tuple[str | None, str]:
    _config, db = node.open()
    try:
        with db.read() as conn:
            from sqlalchemy import select

            from fhirsync.store.tables import records

            row = conn.execute(
                select(records.c.via, records.c.origin).where(records.c.uuid == uuid)
            ).one()
            return row.via, row.origin
    finally:
        db.dispose()


@pytest.fixture
def parent(node_factory: NodeFactory) -> NodeHandle:
    handle = node_factory("parent")
    add_user(handle, "clinic-a", "child", "clinic-a")
    add_user(handle, "clinic-b", "child", "clinic-b")
    add_user(handle, "reader", "viewer")
    return handle


def test_unknown_account_is_401_everywhere(parent: NodeHandle) -> None:
    with httpx.Client(base_url=parent.base_url, auth=("nobody", "wrong-password")) as client:
        uuid = str(uuidlib.uuid4())
        assert client.put(f"{FHIR}/Patient/{uuid}", json=patient(id=uuid)).status_code == 401
        url = f"{parent.base_url}{FHIR}/Patient/{uuid}"
        assert client.post("/ws/rest/sync2", content=wrapper(url)).status_code == 401
    assert httpx.post(f"{parent.base_url}/ws/rest/sync2", content=b"{}").status_code == 401


def test_child_write_records_the_child(parent: NodeHandle) -> None:
    uuid = str(uuidlib.uuid4())
    with as_user(parent, "clinic-a") as client:
        assert client.put(f"{FHIR}/Patient/{uuid}", json=patient(id=uuid)).status_code == 201
        # A node below clinic-a (no account here) may be named as the origin of a relayed change.
        other = str(uuidlib.uuid4())
        relayed = client.put(
            f"{FHIR}/Patient/{other}",
            json=patient(id=other),
            headers={"X-Fhirsync-Origin": "grandchild-1"},
        )
        assert relayed.status_code == 201
    assert via_and_origin(parent, uuid) == ("child:clinic-a", "clinic-a")
    assert via_and_origin(parent, other) == ("child:clinic-a", "grandchild-1")
    _config, db = parent.open()
    try:
        with db.read() as conn:
            assert children.received_per_child(conn) == {"clinic-a": 2}
            assert children.changes_per_child(conn) == {"clinic-a": 2}
    finally:
        db.dispose()


def test_an_origin_that_is_no_instance_id_is_refused_by_fhir(parent: NodeHandle) -> None:
    # REST: tests/integration/test_rest_api.py::test_child_writes_carry_origin_and_via
    uuid = str(uuidlib.uuid4())
    with as_user(parent, "clinic-a") as client:
        fhir = client.put(
            f"{FHIR}/Patient/{uuid}",
            json=patient(id=uuid),
            headers={"X-Fhirsync-Origin": "not an id"},
        )
        assert fhir.status_code == 400
        assert "X-Fhirsync-Origin" in fhir.json()["issue"][0]["diagnostics"]
    assert via_and_origin_missing(parent, uuid)


@pytest.mark.parametrize("claimed", ["clinic-b", "parent"])
def test_child_cannot_claim_another_id(parent: NodeHandle, claimed: str) -> None:
    uuid = str(uuidlib.uuid4())
    with as_user(parent, "clinic-a") as client:
        direct = client.put(
            f"{FHIR}/Patient/{uuid}", json=patient(id=uuid), headers={"X-Fhirsync-Origin": claimed}
        )
        assert direct.status_code == 403
        assert direct.json()["resourceType"] == "OperationOutcome"
        rest = client.post(
            "/ws/rest/v1/location",
            json={"name": "Ward 9"},
            headers={"X-Fhirsync-Origin": claimed},
        )
        assert rest.status_code == 403
        url = f"{parent.base_url}{FHIR}/Patient/{uuid}"
        wrapped = client.post(
            "/ws/rest/sync2", content=wrapper(url, body=patient(id=uuid), instance=claimed)
        )
        assert wrapped.status_code == 403
    assert via_and_origin_missing(parent, uuid)


def via_and_origin_missing(node: NodeHandle, uuid: str) -> bool:
    _config, db = node.open()
    try:
        with db.read() as conn:
            return store.get(conn, "patient", uuid) is None
    finally:
        db.dispose()


def test_whitelist_binds_child_accounts(node_factory: NodeFactory) -> None:
    handle = node_factory("parent", start=False)
    update_sync2(handle.node_dir, {"whitelist": {"enabled": True, "instanceIds": ["clinic-a"]}})
    handle.start()
    add_user(handle, "clinic-a", "child", "clinic-a")
    add_user(handle, "clinic-b", "child", "clinic-b")
    uuid = str(uuidlib.uuid4())
    url = f"{handle.base_url}{FHIR}/Patient/{uuid}"
    with as_user(handle, "clinic-b") as client:
        assert client.put(f"{FHIR}/Patient/{uuid}", json=patient(id=uuid)).status_code == 403
        body = wrapper(url, body=patient(id=uuid), instance="clinic-b")
        assert client.post("/ws/rest/sync2", content=body).status_code == 403
        # Reading is not a write: the whitelist does not hide the parent's data from its accounts.
        assert client.get(f"{FHIR}/Patient/{uuid}").status_code == 404
    with as_user(handle, "clinic-a") as client:
        body = wrapper(url, body=patient(id=uuid), instance="clinic-a")
        assert client.post("/ws/rest/sync2", content=body).status_code == 201


def test_proxy_forwards_in_process_as_the_caller(parent: NodeHandle) -> None:
    uuid = str(uuidlib.uuid4())
    url = f"{parent.base_url}{FHIR}/Patient/{uuid}"
    with as_user(parent, "clinic-a") as client:
        created = client.post("/ws/rest/sync2", content=wrapper(url, body=patient(id=uuid)))
        assert created.status_code == 201, created.text
        assert created.headers["etag"] == 'W/"1"'
        read = client.post("/ws/rest/sync2", content=wrapper(url, method="GET"))
        assert read.status_code == 200
        assert read.json()["id"] == uuid
        deleted = client.post("/ws/rest/sync2", content=wrapper(url, method="DELETE", body=uuid))
        assert deleted.status_code == 204
        gone = client.post("/ws/rest/sync2", content=wrapper(url, method="GET"))
        assert gone.status_code == 410
    assert via_and_origin(parent, uuid) == ("child:clinic-a", "clinic-a")
    # A viewer stays a viewer through the proxy: no privilege escalation (spec §12).
    other = f"{parent.base_url}{FHIR}/Patient/{uuidlib.uuid4()}"
    with as_user(parent, "reader") as client:
        refused = client.post(
            "/ws/rest/sync2", content=wrapper(other, body=patient(), instance="viewer")
        )
        assert refused.status_code == 403


def test_proxy_refuses_foreign_inner_urls(parent: NodeHandle, node_factory: NodeFactory) -> None:
    other = node_factory("elsewhere")
    uuid = str(uuidlib.uuid4())
    foreign = [
        f"{other.base_url}{FHIR}/Patient/{uuid}",
        f"http://127.0.0.2:{parent.port}{FHIR}/Patient/{uuid}",
        f"http://example.org{FHIR}/Patient/{uuid}",
        f"http://admin:pw@127.0.0.1:{parent.port}{FHIR}/Patient/{uuid}",
        "file:///etc/passwd",
        f"{parent.base_url}/ws/rest/sync2",
        f"{parent.base_url}/sync2/",
        # Dot segments that the inner client would resolve to a path outside /ws/.
        f"{parent.base_url}/ws/../sync2/config",
        f"{parent.base_url}/ws/./../metrics",
        f"{parent.base_url}/ws/rest/sync2/../sync2",
    ]
    with as_user(parent, "clinic-a") as client:
        for url in foreign:
            answer = client.post("/ws/rest/sync2", content=wrapper(url, body=patient(id=uuid)))
            assert answer.status_code == 400, url
            assert "error" in answer.json()
    with other.client() as client:
        assert client.get(f"{FHIR}/Patient/{uuid}").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"instanceId": "clinic-a", "clientName": "fhir", "className": "x"}',
        b'{"instanceId": "clinic-a", "clientName": "fhir", "className": "x",'
        b' "request": {"method": "PATCH", "url": "http://127.0.0.1/ws/fhir2/R4/Patient"}}',
        b'{"clientName": "fhir", "className": "x",'
        b' "request": {"method": "GET", "url": "http://127.0.0.1/ws/fhir2/R4/Patient"}}',
    ],
)
def test_proxy_malformed_wrapper_is_400(parent: NodeHandle, body: bytes) -> None:
    with as_user(parent, "clinic-a") as client:
        answer = client.post("/ws/rest/sync2", content=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 400


def test_invalid_pushed_record_is_rejected_with_a_clear_error(parent: NodeHandle) -> None:
    uuid = str(uuidlib.uuid4())
    with as_user(parent, "clinic-a") as client:
        answer = client.put(f"{FHIR}/Patient/{uuid}", json=patient(id=uuid, gender="femme"))
    assert answer.status_code == 400
    assert "gender" in orjson.dumps(answer.json()).decode()
