"""``/ws/rest/sync2/messages`` (spec §10) through a running node, against OpenMRS's sample JSON."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import NodeFactory

from fhirsync.store import users
from fhirsync.testing.servers import NodeHandle

pytestmark = pytest.mark.postgres

URL = "/ws/rest/sync2/messages"
ALL = {"success": "ALL", "operation": "ALL", "resourceName": "ALL", "creatorInstanceId": "ALL"}


def _sample(reference_dir: Path, name: str = "sampleAuditMessage.json") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((reference_dir / "openmrs" / "sync2" / name).read_text())
    return data


def _add_user(
    node: NodeHandle, name: str, role: str, instance_id: str | None = None
) -> tuple[str, str]:
    _config, db = node.open()
    try:
        with db.write() as conn:
            users.add(conn, name, "password-123", role, instance_id)  # type: ignore[arg-type]
    finally:
        db.dispose()
    return (name, "password-123")


@pytest.fixture
def central(node_factory: NodeFactory) -> NodeHandle:
    return node_factory("central")


def test_create_get_and_list_round_trip_the_sample(
    central: NodeHandle, reference_dir: Path
) -> None:
    sample = _sample(reference_dir)
    with central.client() as client:
        created = client.post(URL, json=sample)
        assert created.status_code == 200, created.text
        body = created.json()
        assert list(body) == list(sample)  # every key, in OpenMRS's order
        assert {k: v for k, v in body.items() if k != "id"} == {
            k: v for k, v in sample.items() if k != "id"
        }
        fetched = client.get(f"{URL}/{sample['uuid']}").json()
        assert fetched == body
        listing = client.get(URL, params=ALL).json()
    assert set(listing) == {"itemsCount", "page", "pageSize", "data"}
    assert (listing["itemsCount"], listing["page"], listing["pageSize"]) == (1, 1, 100)
    assert listing["data"] == [body]


def test_duplicate_uuid_is_refused_with_403(central: NodeHandle, reference_dir: Path) -> None:
    sample = _sample(reference_dir)
    with central.client() as client:
        assert client.post(URL, json=sample).status_code == 200
        again = client.post(URL, json=sample)
    assert again.status_code == 403
    assert again.json()["error"]["message"] == "The entity already exists"


def test_list_filters_and_pages_newest_first(central: NodeHandle, reference_dir: Path) -> None:
    listing_sample = _sample(reference_dir, "sampleAuditMessages.json")
    with central.client() as client:
        for i, item in enumerate(listing_sample["data"]):
            msg = {**item, "resourceName": "patient", "timestamp": f"2017-12-07 00:00:0{i}"}
            assert client.post(URL, json=msg).status_code == 200
        for i in range(3):
            extra = {
                "uuid": str(uuid.uuid4()),
                "success": False,
                "timestamp": f"2018-01-0{i + 1} 10:00:00",
                "resourceName": "visit",
                "operation": "PULL",
                "creatorInstanceId": "clinic-b",
            }
            assert client.post(URL, json=extra).status_code == 200

        def get(**params: object) -> dict[str, Any]:
            answer = client.get(URL, params={**ALL, **params})
            assert answer.status_code == 200, answer.text
            data: dict[str, Any] = answer.json()
            return data

        everything = get()
        assert everything["itemsCount"] == 5
        stamps = [m["timestamp"] for m in everything["data"]]
        assert stamps == sorted(stamps, reverse=True)
        assert get(success="FAILURE")["itemsCount"] == 4
        assert get(operation="pull")["itemsCount"] == 3
        assert get(operation="nonsense")["itemsCount"] == 5  # unknown operation means ALL
        assert get(resourceName="VISIT")["itemsCount"] == 3
        assert get(creatorInstanceId="sampleCreatorInstance1")["itemsCount"] == 2
        page2 = get(pageIndex=2, pageSize=2)
        assert (page2["page"], page2["pageSize"], len(page2["data"])) == (2, 2, 2)
        assert page2["data"][0]["uuid"] == everything["data"][2]["uuid"]
        for bad in ({"success": "MAYBE"}, {"resourceName": "NOPE"}, {"creatorInstanceId": " "}):
            assert client.get(URL, params={**ALL, **bad}).status_code == 400
        assert client.get(URL, params={"success": "ALL"}).status_code == 400


def test_a_page_past_the_end_is_empty(central: NodeHandle, reference_dir: Path) -> None:
    with central.client() as client:
        client.post(URL, json=_sample(reference_dir))
        for index in (2, 2**40, 10**20):
            answer = client.get(URL, params={**ALL, "pageIndex": index})
            assert answer.status_code in (200, 400), answer.text
            if answer.status_code == 200:
                assert answer.json()["itemsCount"] == 1 and answer.json()["data"] == []


def test_update_and_void(central: NodeHandle, reference_dir: Path) -> None:
    sample = _sample(reference_dir)
    path = f"{URL}/{sample['uuid']}"
    with central.client() as client:
        assert client.post(path, json=sample).status_code == 404
        client.post(URL, json=sample)
        changed = client.post(path, json={**sample, "details": "fixed", "success": True})
        assert changed.status_code == 200
        assert changed.json()["details"] == "fixed" and changed.json()["success"] is True
        mismatch = client.post(path, json={**sample, "uuid": str(uuid.uuid4())})
        assert mismatch.status_code == 400
        voided = client.delete(path)
        assert voided.status_code == 200 and voided.json()["voided"] is True
        assert client.get(URL, params=ALL).json()["itemsCount"] == 0
        assert client.delete(f"{URL}/{uuid.uuid4()}").status_code == 404
        missing = client.get(f"{URL}/{uuid.uuid4()}")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "The entity doesn't exists"


def test_bad_bodies_are_400(central: NodeHandle) -> None:
    with central.client() as client:
        assert client.post(URL, content=b"{not json").status_code == 400
        assert client.post(URL, json=[1]).status_code == 400
        assert client.post(URL, json={"uuid": "x", "bogus": 1}).status_code == 400
        bad_time = client.post(URL, json={"uuid": "x", "timestamp": "yesterday"})
        assert bad_time.status_code == 400
        # Uuids end up in the admin pages' link and form paths: "../pull#" made Retry pull.
        for key in ("uuid", "nextMessageUuid", "mergeConflictUuid"):
            sneaky = client.post(URL, json={"uuid": "m-1", key: "../pull#"})
            assert sneaky.status_code == 400, (key, sneaky.text)
            assert key in sneaky.json()["error"]["message"]
        assert client.get(URL, params=ALL).json()["itemsCount"] == 0


def test_out_of_range_times_and_overlong_fields_are_400(central: NodeHandle) -> None:
    """Values no column can hold: before, 500 (a time zone pushing year 1 or 9999 out of
    Python's range on both databases; a field longer than its column on PostgreSQL, while
    SQLite stored it)."""
    with central.client() as client:
        for body, words in (
            ({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp"),
            ({"timestamp": "9999-12-31T23:59:59-14:00"}, "timestamp"),
            ({"uuid": "u" * 39}, "uuid"),
            ({"action": "a" * 33}, "action"),
            ({"usedResourceUrl": "http://x/" + "p" * 1024}, "usedResourceUrl"),
        ):
            response = client.post(URL, json={"success": True, **body})
            assert response.status_code == 400, (body, response.text)
            assert words in response.json()["error"]["message"]
        assert client.get(URL, params=ALL).json()["itemsCount"] == 0


def test_permissions(central: NodeHandle, reference_dir: Path) -> None:
    sample = _sample(reference_dir)
    viewer = _add_user(central, "watcher", "viewer")
    child = _add_user(central, "clinic-b", "child", "clinic-b")
    base = central.base_url
    assert httpx.get(base + URL, params=ALL).status_code == 401
    assert httpx.get(base + URL, params=ALL, auth=viewer).status_code == 200
    assert httpx.post(base + URL, json=sample, auth=viewer).status_code == 403
    # A child may only write messages it created itself.
    assert httpx.post(base + URL, json=sample, auth=child).status_code == 403
    own = {**sample, "creatorInstanceId": "clinic-b"}
    assert httpx.post(base + URL, json=own, auth=child).status_code == 200
    assert httpx.get(base + URL, params=ALL, auth=child).status_code == 403
    assert httpx.delete(f"{base}{URL}/{sample['uuid']}", auth=child).status_code == 403


def test_persist_flags_decide_what_is_stored(central: NodeHandle) -> None:
    from fhirsync.node import update_sync2

    central.stop()
    update_sync2(central.node_dir, {"general": {"persistSuccessAudit": False}})
    central.start()
    message = {"uuid": str(uuid.uuid4()), "success": True, "timestamp": "2020-01-01 00:00:00"}
    with central.client() as client:
        answer = client.post(URL, json=message)
        assert answer.status_code == 200 and answer.json()["id"] is None
        assert client.get(f"{URL}/{message['uuid']}").status_code == 404
