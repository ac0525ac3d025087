"""An open conflict follows later changes on either side (real nodes on loopback).

A local edit refreshes the conflict's local side (so a resolution never keeps a stale local
version), and the conflict closes by itself, audited, once both sides hold the same version or
the changes merge cleanly; a pulled edit that matches the child's closes it too.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
import pytest
from sqlalchemy import select
from tests.integration.conflict_support import PAIR, conflict_of, edit

from fhirsync.errors import RecordNotFound
from fhirsync.records import Record, RecordWrite
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store import records as record_repo
from fhirsync.store.conflicts import Conflict
from fhirsync.store.tables import audit
from fhirsync.sync.reconcile import reconciler_for
from fhirsync.sync.resolve import resolve
from fhirsync.testing.network import (
    FHIR,
    Network,
    all_agree,
    build_network,
    create_patient,
    sync_until_quiet,
)
from fhirsync.testing.servers import NodeHandle


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "net", PAIR)
    yield network
    network.stop()


def record(node: NodeHandle, uuid: str) -> Record:
    _config, db = node.open()
    try:
        with db.read() as conn:
            found = record_repo.get(conn, "patient", uuid)
    finally:
        db.dispose()
    assert found is not None
    return found


def audit_rows(node: NodeHandle, uuid: str) -> list[tuple[str, str | None, str]]:
    _config, db = node.open()
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(audit.c.action, audit.c.merge_conflict_uuid, audit.c.details)
                .where(audit.c.record_uuid == uuid)
                .order_by(audit.c.id)
            )
            return [(r.action, r.merge_conflict_uuid, r.details) for r in rows]
    finally:
        db.dispose()


def gender_conflict(net: Network) -> tuple[str, Conflict]:
    """Parent sets gender male, child other: an open conflict on the child."""
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_patient(parent, "Adjei")
    sync_until_quiet(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, gender="other")
    sync_until_quiet(net)
    _config, db = child.open()
    try:
        with db.read() as conn:
            found = conflict_repo.open_for(conn, "patient", [uuid])[uuid]
    finally:
        db.dispose()
    assert found.paths == ("gender",)
    return uuid, found


def assert_closed_by_itself(node: NodeHandle, conflict: Conflict, resolution: str) -> None:
    closed = conflict_of(node, conflict.uuid)
    assert (closed.status, closed.resolved_by, closed.resolution) == (
        conflict_repo.RESOLVED,
        "sync",
        resolution,
    )
    rows = [r for r in audit_rows(node, conflict.record_uuid) if r[0] == "CONVERGED"]
    assert len(rows) == 1 and rows[0][1] == conflict.uuid
    assert "closed by itself" in rows[0][2]


def test_a_local_edit_refreshes_the_local_side_and_resolution_keeps_it(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    edit(child, uuid, birthDate="1970-01-01")
    refreshed = conflict_of(child, conflict.uuid)
    assert refreshed.status == conflict_repo.OPEN
    assert refreshed.local()["birthDate"] == "1970-01-01"
    assert refreshed.local()["gender"] == "other"
    assert refreshed.paths == ("gender",)
    assert refreshed.remote()["gender"] == "male"
    config, db = child.open()
    try:
        resolve(db, reconciler_for(config), conflict.uuid, resolved_by="tester", take="local")
    finally:
        db.dispose()
    sync_until_quiet(net)
    on_parent = record(parent, uuid).resource()
    assert (on_parent["gender"], on_parent["birthDate"]) == ("other", "1970-01-01")
    assert all_agree(net)


def test_a_local_edit_to_the_parents_value_closes_the_conflict(net: Network) -> None:
    child = net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    edit(child, uuid, gender="male")
    assert_closed_by_itself(child, conflict, "converged")
    sync_until_quiet(net)
    assert all_agree(net)
    assert record(child, uuid).resource()["gender"] == "male"


def test_a_local_edit_that_now_merges_closes_the_conflict_and_goes_up(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    edit(child, uuid, gender="male", birthDate="2001-12-31")
    assert_closed_by_itself(child, conflict, "merged")
    sync_until_quiet(net)
    assert record(parent, uuid).resource()["birthDate"] == "2001-12-31"
    assert all_agree(net)


def test_a_local_revert_to_the_base_takes_the_parents_version(net: Network) -> None:
    child = net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    edit(child, uuid, gender="female")
    assert_closed_by_itself(child, conflict, "converged")
    assert record(child, uuid).resource()["gender"] == "male"
    sync_until_quiet(net)
    assert all_agree(net)


def test_a_bundle_write_closes_the_conflict(net: Network) -> None:
    child = net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    with child.client() as client:
        body = client.get(f"{FHIR}/Patient/{uuid}").raise_for_status().json()
        body["gender"] = "male"
        entry = {"resource": body, "request": {"method": "PUT", "url": f"Patient/{uuid}"}}
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
        client.post(FHIR, json=bundle).raise_for_status()
    assert_closed_by_itself(child, conflict, "converged")


def test_the_same_edit_pulled_from_the_parent_closes_the_conflict(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    edit(parent, uuid, gender="other")
    sync_until_quiet(net)
    assert_closed_by_itself(child, conflict, "converged")
    assert all_agree(net)


def test_resolution_reads_local_writes_made_outside_the_api(net: Network) -> None:
    """A write straight to the store (an import) is seen when resolving: the conflict is decided
    again first, and one that closed by itself cannot be resolved."""
    child = net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    config, db = child.open()
    try:
        with db.write() as conn:
            current = record(child, uuid).resource()
            body = {**current, "gender": "male"}
            record_repo.write(conn, RecordWrite("patient", uuid, body, "child", via=None))
        with pytest.raises(RecordNotFound, match="closed by itself"):
            resolve(
                db,
                reconciler_for(config),
                conflict.uuid,
                resolved_by="tester",
                take="local",
                now=datetime.now(UTC),
            )
    finally:
        db.dispose()
    assert_closed_by_itself(child, conflict, "converged")


def test_a_resolution_that_finds_the_base_again_takes_the_parents_version_as_the_parents(
    net: Network,
) -> None:
    """A write straight to the store went back to the base: resolving decides again first, the
    conflict closes by itself and the parent's version is taken, labelled as the parent's change
    (it was labelled as this node's, so this node's own feed said the change began here)."""
    child = net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    base = conflict.base()
    assert base is not None and base["gender"] == "female"
    config, db = child.open()
    try:
        with db.write() as conn:
            body = {**record(child, uuid).resource(), "gender": "female"}
            record_repo.write(conn, RecordWrite("patient", uuid, body, "child", via=None))
        with pytest.raises(RecordNotFound, match="closed by itself"):
            resolve(db, reconciler_for(config), conflict.uuid, resolved_by="t", take="local")
    finally:
        db.dispose()
    assert_closed_by_itself(child, conflict, "converged")
    taken = record(child, uuid)
    assert taken.resource()["gender"] == "male"
    assert taken.origin == config.parent_url


def test_fhirsync_import_decides_open_conflicts_again(net: Network, tmp_path: Path) -> None:
    """`fhirsync import` writes straight to the store, then re-decides open conflicts as the API
    does after its own writes: importing the parent's value closes the conflict at once."""
    child = net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    body = {**record(child, uuid).resource(), "gender": "male"}
    body.pop("meta", None)
    data = tmp_path / "fix.ndjson"
    data.write_bytes(orjson.dumps(body) + b"\n")
    done = subprocess.run(
        [sys.executable, "-m", "fhirsync", "import", str(child.node_dir), str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 open conflicts decided again" in done.stdout
    assert_closed_by_itself(child, conflict, "converged")


def test_a_parent_going_back_to_the_base_closes_the_conflict_and_the_child_wins(
    net: Network,
) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    edit(parent, uuid, gender="female")
    sync_until_quiet(net)
    assert_closed_by_itself(child, conflict, "local")
    assert record(parent, uuid).resource()["gender"] == "other"
    assert all_agree(net)


def resolve_taking(node: NodeHandle, conflict: Conflict, take: Literal["local", "remote"]) -> None:
    config, db = node.open()
    try:
        resolve(db, reconciler_for(config), conflict.uuid, resolved_by="tester", take=take)
    finally:
        db.dispose()


def test_taking_local_keeps_the_parents_change_to_another_field(net: Network) -> None:
    """The parent changes another field after the conflict (a pull refreshes its remote side):
    taking this node's side decides the conflicting field, and the other change stays merged.
    Before, the local body was written whole and the parent's new birthDate was reverted on
    every node, with nothing saying so."""
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    edit(parent, uuid, birthDate="2000-01-01")
    sync_until_quiet(net)
    assert conflict_of(child, conflict.uuid).remote()["birthDate"] == "2000-01-01"
    resolve_taking(child, conflict, "local")
    sync_until_quiet(net)
    for node in (parent, child):
        body = record(node, uuid).resource()
        assert (body["gender"], body["birthDate"]) == ("other", "2000-01-01")
    assert all_agree(net)


def test_taking_remote_keeps_this_nodes_change_to_another_field(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    edit(child, uuid, birthDate="1970-01-01")
    assert conflict_of(child, conflict.uuid).local()["birthDate"] == "1970-01-01"
    resolve_taking(child, conflict, "remote")
    sync_until_quiet(net)
    for node in (parent, child):
        body = record(node, uuid).resource()
        assert (body["gender"], body["birthDate"]) == ("male", "1970-01-01")
    assert all_agree(net)
