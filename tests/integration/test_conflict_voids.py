"""Voids between a parent and a child carry bodies and base versions (real nodes on loopback).

A pulled void brings the parent's last body (its FHIR read serves a voided record to a child
that asks with ``X-Fhirsync-Inactive: include``); a pushed void after a local edit sends the edit
first; a pushed FHIR DELETE carries ``If-Match`` like an update.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.integration.conflict_support import PAIR, edit, void

from fhirsync import categories as cats
from fhirsync.clients.base import OutgoingChange, RecordRef
from fhirsync.clients.fhir import FhirClient
from fhirsync.errors import RemoteRejected
from fhirsync.records import Record
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store import records as record_repo
from fhirsync.store import users
from fhirsync.testing.network import (
    FHIR,
    Network,
    build_network,
    child_password,
    create_patient,
    sync_until_quiet,
)
from fhirsync.testing.servers import NodeHandle

PATIENT = cats.get("patient")
INCLUDE = {"X-Fhirsync-Inactive": "include"}


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "net", PAIR)
    yield network
    network.stop()


def stored(node: NodeHandle, uuid: str) -> tuple[Record, bool]:
    """The record on ``node`` and whether it has an open conflict."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            record = record_repo.get(conn, "patient", uuid)
            open_ = conflict_repo.open_for(conn, "patient", [uuid])
    finally:
        db.dispose()
    assert record is not None
    return record, uuid in open_


def add_viewer(node: NodeHandle) -> None:
    _config, db = node.open()
    try:
        with db.write() as conn:
            users.add(conn, "viewer", "viewer-password", "viewer")
    finally:
        db.dispose()


def test_a_voided_record_is_read_only_by_a_child_or_admin_that_asks(net: Network) -> None:
    parent = net.nodes["parent"]
    uuid = create_patient(parent, "Mensah")
    edit(parent, uuid, gender="male")
    void(parent, uuid)
    add_viewer(parent)
    url = f"{parent.base_url}{FHIR}/Patient/{uuid}"
    child_auth = ("child", child_password("child"))
    with parent.client() as admin:
        assert admin.get(url).status_code == 410
        answer = admin.get(url, headers=INCLUDE)
    assert answer.status_code == 200
    assert answer.headers["X-Fhirsync-State"] == "voided"
    assert answer.json()["gender"] == "male"
    assert answer.headers["ETag"] == f'W/"{stored(parent, uuid)[0].version}"'
    assert httpx.get(url, auth=child_auth, headers=INCLUDE).status_code == 200
    assert httpx.get(url, auth=("viewer", "viewer-password"), headers=INCLUDE).status_code == 410
    missing = f"{parent.base_url}{FHIR}/Patient/no-such-patient"
    assert httpx.get(missing, auth=child_auth, headers=INCLUDE).status_code == 404


def test_an_active_record_is_read_as_usual_with_the_header(net: Network) -> None:
    parent = net.nodes["parent"]
    uuid = create_patient(parent, "Boateng")
    with parent.client() as admin:
        answer = admin.get(f"{FHIR}/Patient/{uuid}", headers=INCLUDE)
    assert answer.status_code == 200
    assert "X-Fhirsync-State" not in answer.headers


def test_a_pulled_void_after_an_edit_takes_the_parents_last_body(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_patient(parent, "Asante")
    sync_until_quiet(net)
    edit(parent, uuid, birthDate="1970-01-01")
    void(parent, uuid)
    sync_until_quiet(net)
    on_parent, _ = stored(parent, uuid)
    on_child, open_ = stored(child, uuid)
    assert (on_child.state, on_child.content_hash) == ("voided", on_parent.content_hash)
    assert on_child.resource()["birthDate"] == "1970-01-01"
    assert not open_


def test_a_pushed_void_after_an_edit_sends_the_edit_first(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_patient(parent, "Owusu")
    sync_until_quiet(net)
    edit(child, uuid, gender="other")
    void(child, uuid)
    sync_until_quiet(net)
    on_parent, _ = stored(parent, uuid)
    on_child, open_ = stored(child, uuid)
    assert on_parent.state == "voided"
    assert on_parent.resource()["gender"] == "other"
    assert on_parent.content_hash == on_child.content_hash
    assert not open_


def test_a_pushed_void_after_an_edit_against_a_parent_edit_is_a_conflict(net: Network) -> None:
    """The edit goes up first with If-Match: the parent refuses it (412), so neither the child's
    edit nor its void overwrites the parent's edit; the child keeps both versions."""
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_patient(parent, "Darko")
    sync_until_quiet(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, gender="other")
    void(child, uuid)
    sync_until_quiet(net)
    on_parent, _ = stored(parent, uuid)
    on_child, open_ = stored(child, uuid)
    assert (on_parent.state, on_parent.resource()["gender"]) == ("active", "male")
    assert (on_child.state, on_child.resource()["gender"]) == ("voided", "other")
    assert open_


def test_fhir_client_sends_a_delete_with_if_match(net: Network) -> None:
    parent = net.nodes["parent"]
    uuid = create_patient(parent, "Quaye")
    version = stored(parent, uuid)[0].version
    void_change = OutgoingChange("patient", uuid, "VOIDED", None, "voided", str(version + 7))
    with httpx.Client(base_url=parent.base_url, auth=parent.auth) as http:
        client = FhirClient(http)
        stale = client.send(PATIENT, [void_change])
        error = stale.failed[uuid]
        assert isinstance(error, RemoteRejected) and error.status == 412
        assert stored(parent, uuid)[0].state == "active"
        current = OutgoingChange("patient", uuid, "VOIDED", None, "voided", str(version))
        assert client.send(PATIENT, [current]).sent == {uuid}
        assert stored(parent, uuid)[0].state == "voided"
        last = client.fetch_last(PATIENT, [RecordRef(uuid, {}), RecordRef("nobody", {})])
    assert last.found[uuid]["name"][0]["family"] == "Quaye"
    assert last.absent == {"nobody"}
