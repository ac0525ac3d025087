"""FHIR and REST client details beyond the contract, against a real node on loopback."""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Callable

import httpx

from fhirsync import categories
from fhirsync.clients.base import OutgoingChange, RecordRef
from fhirsync.clients.facade import ClientFacade
from fhirsync.clients.fhir import FhirClient
from fhirsync.clients.http import make_http_client
from fhirsync.clients.rest import RestClient
from fhirsync.errors import InvalidResource, RemoteRejected
from fhirsync.testing.servers import NodeHandle

NodeFactory = Callable[..., NodeHandle]
PATIENT = categories.get("patient")
VISITTYPE = categories.get("visittype")


def _patient(i: int) -> dict[str, object]:
    return {"resourceType": "Patient", "gender": "male", "name": [{"family": f"F{i}"}]}


def _counting(node: NodeHandle, seen: list[httpx.Request]) -> httpx.Client:
    http = make_http_client(node.base_url, node.auth)
    http.event_hooks["request"] = [seen.append]
    return http


def test_fhir_fetch_chunks_and_follows_next_links(node_factory: NodeFactory) -> None:
    node = node_factory("paging", extra_settings={"search_max_count": 4})
    seen: list[httpx.Request] = []
    http = _counting(node, seen)
    client = FhirClient(http, batch_size=7)
    uuids = [str(uuid_lib.uuid4()) for _ in range(20)]
    changes = [
        OutgoingChange("patient", u, "CREATED", _patient(i), "active") for i, u in enumerate(uuids)
    ]
    assert client.send(PATIENT, changes).sent == set(uuids)
    seen.clear()
    result = client.fetch(PATIENT, [RecordRef(u, {}) for u in uuids])
    assert set(result.found) == set(uuids)
    # chunks of 7, 7, 6 ids; the node pages by 4, so each chunk takes two pages
    assert len(seen) == 6
    assert all(r.url.host == "127.0.0.1" for r in seen)
    http.close()


def test_fhir_send_stale_version_is_a_412_rejection(node: NodeHandle) -> None:
    seen: list[httpx.Request] = []
    http = _counting(node, seen)
    client = FhirClient(http)
    uuid = str(uuid_lib.uuid4())
    create = OutgoingChange("patient", uuid, "CREATED", _patient(1), "active")
    assert client.send(PATIENT, [create], origin="child-7").sent == {uuid}
    assert seen[-1].headers["x-fhirsync-origin"] == "child-7"
    update = OutgoingChange("patient", uuid, "UPDATED", _patient(2), "active")
    client.send(PATIENT, [update])  # version 2 now
    stale = OutgoingChange("patient", uuid, "UPDATED", _patient(3), "active", base_version="1")
    result = client.send(PATIENT, [stale])
    error = result.failed[uuid]
    assert isinstance(error, RemoteRejected) and error.status == 412
    http.close()


def test_fhir_bad_ids_and_bodies_fail_per_record(node: NodeHandle) -> None:
    http = make_http_client(node.base_url, node.auth)
    client = FhirClient(http)
    good = str(uuid_lib.uuid4())
    fetched = client.fetch(PATIENT, [RecordRef("not a valid id!", {}), RecordRef(good, {})])
    assert isinstance(fetched.failed["not a valid id!"], InvalidResource)
    assert fetched.absent == {good}
    bad = {"resourceType": "Patient", "gender": "femme"}
    sent = client.send(
        PATIENT,
        [
            OutgoingChange("patient", good, "CREATED", _patient(1), "active"),
            OutgoingChange("patient", "bad-one", "CREATED", bad, "active"),
            OutgoingChange("patient", "no-body", "UPDATED", None, "active"),
        ],
    )
    assert sent.sent == {good}
    assert isinstance(sent.failed["bad-one"], RemoteRejected)
    assert sent.failed["bad-one"].status == 400 and "gender" in str(sent.failed["bad-one"])
    assert isinstance(sent.failed["no-body"], InvalidResource)
    http.close()


def test_rest_every_action_round_trips(node: NodeHandle) -> None:
    http = make_http_client(node.base_url, node.auth)
    client = RestClient(http, concurrency=4)
    uuid = str(uuid_lib.uuid4())
    body = {"name": "Outpatient", "description": "d"}

    def send(action: str, state: str = "active") -> None:
        change = OutgoingChange("visittype", uuid, action, body, state)  # type: ignore[arg-type]
        result = client.send(VISITTYPE, [change], origin="child-1")
        assert result.sent == {uuid}, result.failed

    def fetched() -> dict[str, object] | None:
        return client.fetch(VISITTYPE, [RecordRef(uuid, {})]).found.get(uuid)

    send("CREATED")
    assert (fetched() or {})["retired"] is False
    send("RETIRED", "retired")
    assert (fetched() or {})["retired"] is True
    send("UNRETIRED")
    assert (fetched() or {})["retired"] is False
    send("UPDATED")
    send("DELETED", "deleted")
    assert fetched() is None
    send("DELETED", "deleted")  # already gone: done, not failed
    client.close()
    http.close()


def test_rest_fetch_uses_the_entry_link_path_only(node: NodeHandle) -> None:
    seen: list[httpx.Request] = []
    http = _counting(node, seen)
    client = RestClient(http)
    uuid = str(uuid_lib.uuid4())
    client.send(VISITTYPE, [OutgoingChange("visittype", uuid, "CREATED", {"name": "x"}, "active")])
    link = f"http://publisher.example.invalid/ws/rest/v1/visittype/{uuid}?v=full"
    result = client.fetch(VISITTYPE, [RecordRef(uuid, {"rest": link})])
    assert uuid in result.found
    assert seen[-1].url.host == "127.0.0.1" and seen[-1].url.params["v"] == "full"
    client.close()
    http.close()


def test_facade_and_clients_for_a_child_of_a_real_parent(node_factory: NodeFactory) -> None:
    parent = node_factory("parent")
    child = node_factory("child", parent=parent, start=False)
    config, db = child.open()
    db.dispose()
    facade = ClientFacade.for_parent(config)
    try:
        assert set(facade.clients) >= {"fhir", "rest"}
        client = facade.choose(PATIENT, {"fhir": "/ws/fhir2/R4/Patient/x"})
        uuid = str(uuid_lib.uuid4())
        change = OutgoingChange("patient", uuid, "CREATED", _patient(1), "active")
        assert client.send(PATIENT, [change]).sent == {uuid}
        assert uuid in client.fetch(PATIENT, [RecordRef(uuid, {})]).found
        assert facade.choose(VISITTYPE, {}).name == "rest"
    finally:
        facade.close()
