"""REST writes take If-Match; a stale REST push becomes a conflict on the child (real nodes).

OpenMRS REST has no version check, so fhirsync adds one: ``If-Match`` with the record's version
(``W/"3"``) or its entity tag (content hash and state, which every node holding the version
computes alike). The parent answers a stale one with 412 and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirsync import categories as cats
from fhirsync.categories import Category
from fhirsync.clients.base import OutgoingChange, SendResult
from fhirsync.clients.push_http import HttpPushSender
from fhirsync.clients.rest import RestClient
from fhirsync.records import Record
from fhirsync.service.rest import entity_tag
from fhirsync.settings import NodeConfig
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store import records as record_repo
from fhirsync.sync.push_run import run_push
from fhirsync.sync.runner import run_pull
from fhirsync.testing.network import Network, build_network, sync_until_quiet
from fhirsync.testing.servers import NodeHandle

PAIR: tuple[tuple[str, str | None], ...] = (("parent", None), ("child", "parent"))
REST = "/ws/rest/v1"
VISITTYPE = cats.get("visittype")


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "net", PAIR)
    yield network
    network.stop()


def stored(node: NodeHandle, uuid: str) -> Record:
    _config, db = node.open()
    try:
        with db.read() as conn:
            record = record_repo.get(conn, "visittype", uuid)
    finally:
        db.dispose()
    assert record is not None
    return record


def open_conflict(node: NodeHandle, uuid: str) -> conflict_repo.Conflict | None:
    _config, db = node.open()
    try:
        with db.read() as conn:
            return conflict_repo.open_for(conn, "visittype", [uuid]).get(uuid)
    finally:
        db.dispose()


def create_visittype(node: NodeHandle, name: str) -> str:
    with node.client() as client:
        response = client.post(f"{REST}/visittype", json={"name": name, "description": "base"})
        response.raise_for_status()
        uuid: str = response.json()["uuid"]
        return uuid


def tag(record: Record) -> str:
    return f'"{entity_tag(record.content_hash, record.state)}"'


def test_rest_writes_refuse_a_stale_if_match_with_412(net: Network) -> None:
    node = net.nodes["parent"]
    uuid = create_visittype(node, "Outpatient")
    first = stored(node, uuid)
    url = f"{REST}/visittype/{uuid}"
    with node.client() as client:
        client.post(url, json={"description": "edited"}).raise_for_status()
        after_edit = stored(node, uuid)
        for response in (
            client.post(url, json={"description": "stale"}, headers={"If-Match": tag(first)}),
            client.post(
                f"{REST}/visittype",
                json={"uuid": uuid, "description": "stale"},
                headers={"If-Match": tag(first)},
            ),
            client.post(url, json={"description": "stale"}, headers={"If-Match": 'W/"1"'}),
            client.delete(url, headers={"If-Match": tag(first)}),
        ):
            assert response.status_code == 412
            assert "changed since" in response.json()["error"]["message"]
        assert stored(node, uuid) == after_edit
        ok = client.post(url, json={"description": "new"}, headers={"If-Match": tag(after_edit)})
        assert ok.status_code == 200 and ok.json()["description"] == "new"
        version = stored(node, uuid).version
        by_version = client.post(
            url, json={"description": "newer"}, headers={"If-Match": f'W/"{version}"'}
        )
        assert by_version.status_code == 200
        assert client.post(url, json={"name": "Any"}, headers={"If-Match": "*"}).status_code == 200
        assert client.delete(url, headers={"If-Match": tag(stored(node, uuid))}).status_code == 204
        assert stored(node, uuid).state == "retired"
        missing = client.post(
            f"{REST}/visittype",
            json={"uuid": "no-such-visittype", "name": "X"},
            headers={"If-Match": tag(first)},
        )
        assert missing.status_code == 412
        assert client.get(f"{REST}/visittype/no-such-visittype").status_code == 404
        assert client.post(url, json={"name": "Y"}, headers={"If-Match": '""'}).status_code == 400


class RestIfMatchSender(HttpPushSender):
    """The push sender, with REST categories sent by :class:`RestClient` (which sends If-Match)."""

    def __init__(self, config: NodeConfig) -> None:
        settings = config.settings
        assert config.parent_url is not None
        auth = (settings.parent_user or "", settings.parent_password.get_secret_value())
        super().__init__(config.parent_url, auth)
        self._rest = RestClient(
            httpx.Client(base_url=config.parent_url, auth=auth, timeout=30.0), owns_http=True
        )

    def send(
        self,
        category: Category,
        changes: Any,
        *,
        origin: str,
        preferred: str | None = None,
        in_order: bool = False,
    ) -> SendResult:
        if category.is_fhir:
            return super().send(
                category, changes, origin=origin, preferred=preferred, in_order=in_order
            )
        return self._rest.send(category, changes, origin=origin)

    def close(self) -> None:
        self._rest.close()
        super().close()


def push_with_if_match(node: NodeHandle) -> None:
    config, db = node.open()
    try:
        run_push(config, db, sender_factory=RestIfMatchSender)
    finally:
        db.dispose()


def pull(node: NodeHandle) -> None:
    config, db = node.open()
    try:
        run_pull(config, db)
    finally:
        db.dispose()


def test_a_stale_rest_push_becomes_a_conflict_on_the_child(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_visittype(parent, "Inpatient")
    sync_until_quiet(net)
    with parent.client() as client:
        client.post(f"{REST}/visittype/{uuid}", json={"description": "parent"}).raise_for_status()
    with child.client() as client:
        client.post(f"{REST}/visittype/{uuid}", json={"description": "child"}).raise_for_status()
    push_with_if_match(child)
    assert stored(parent, uuid).resource()["description"] == "parent"
    conflict = open_conflict(child, uuid)
    assert conflict is not None and conflict.paths == ("description",)
    assert (conflict.local()["description"], conflict.remote()["description"]) == (
        "child",
        "parent",
    )
    assert stored(child, uuid).resource()["description"] == "child"


def test_a_rest_retire_against_a_parent_edit_is_a_conflict(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_visittype(parent, "Emergency")
    sync_until_quiet(net)
    with parent.client() as client:
        client.post(f"{REST}/visittype/{uuid}", json={"description": "parent"}).raise_for_status()
    with child.client() as client:
        client.delete(f"{REST}/visittype/{uuid}").raise_for_status()
    push_with_if_match(child)
    on_parent = stored(parent, uuid)
    assert (on_parent.state, on_parent.resource()["description"]) == ("active", "parent")
    conflict = open_conflict(child, uuid)
    assert conflict is not None and conflict.paths == ("@state",)


def test_a_fresh_rest_push_names_the_agreed_tag_and_is_accepted(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_visittype(parent, "Dental")
    sync_until_quiet(net)
    with child.client() as client:
        client.post(f"{REST}/visittype/{uuid}", json={"description": "child"}).raise_for_status()
    push_with_if_match(child)
    assert stored(parent, uuid).resource()["description"] == "child"
    assert stored(parent, uuid).content_hash == stored(child, uuid).content_hash
    assert open_conflict(child, uuid) is None
    pull(child)
    assert open_conflict(child, uuid) is None


def test_rest_client_sends_if_match(net: Network) -> None:
    parent = net.nodes["parent"]
    uuid = create_visittype(parent, "Surgery")
    current = stored(parent, uuid)
    good = entity_tag(current.content_hash, current.state)
    body = {**current.resource(), "description": "sent"}
    with httpx.Client(base_url=parent.base_url, auth=parent.auth) as http:
        client = RestClient(http)
        stale = OutgoingChange("visittype", uuid, "UPDATED", body, "active", "0" * 64 + "-active")
        refused = client.send(VISITTYPE, [stale]).failed[uuid]
        assert getattr(refused, "status", None) == 412
        fresh = OutgoingChange("visittype", uuid, "UPDATED", body, "active", good)
        assert client.send(VISITTYPE, [fresh]).sent == {uuid}
        retire = OutgoingChange("visittype", uuid, "RETIRED", None, "retired", good)
        assert getattr(client.send(VISITTYPE, [retire]).failed[uuid], "status", None) == 412
    assert stored(parent, uuid).resource()["description"] == "sent"
    assert stored(parent, uuid).state == "active"


def test_the_production_push_sender_sends_if_match_on_rest(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_visittype(parent, "Maternity")
    sync_until_quiet(net)
    with parent.client() as client:
        client.post(f"{REST}/visittype/{uuid}", json={"description": "parent"}).raise_for_status()
    with child.client() as client:
        client.post(f"{REST}/visittype/{uuid}", json={"description": "child"}).raise_for_status()
    config, db = child.open()
    try:
        run_push(config, db)
    finally:
        db.dispose()
    assert stored(parent, uuid).resource()["description"] == "parent"
    assert open_conflict(child, uuid) is not None


def test_a_pulled_retire_brings_the_parents_last_rest_body(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_visittype(parent, "Pharmacy")
    sync_until_quiet(net)
    with parent.client() as client:
        client.post(f"{REST}/visittype/{uuid}", json={"description": "last"}).raise_for_status()
        client.delete(f"{REST}/visittype/{uuid}").raise_for_status()
    sync_until_quiet(net)
    on_parent, on_child = stored(parent, uuid), stored(child, uuid)
    assert (on_child.state, on_child.resource()["description"]) == ("retired", "last")
    assert on_child.content_hash == on_parent.content_hash
    assert open_conflict(child, uuid) is None
