"""Conflicts between a parent and its children: base versions, merges, policies, 412, resolution."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.conflict_support import PAIR, audit_actions, edit, open_conflicts, read

from fhirsync.sync.push_run import run_push
from fhirsync.testing.network import (
    FHIR,
    Network,
    all_agree,
    build_network,
    create_patient,
    sync_round,
    sync_until_quiet,
)


def make_net(root: Path, policy: str | None = None, tree: Any = PAIR) -> Network:
    extra = {"conflict_policies": {"patient": policy}} if policy else None
    return build_network(root, tree, extra_settings=extra)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    network = make_net(tmp_path / "net")
    yield network
    network.stop()


def shared_patient(net: Network) -> str:
    uuid = create_patient(net.nodes["parent"], "Mensah")
    sync_until_quiet(net)
    return uuid


def test_different_fields_merge_and_every_node_converges(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = shared_patient(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, birthDate="1990-05-05")
    sync_until_quiet(net)
    for node in (parent, child):
        body = read(node, uuid)
        assert (body["gender"], body["birthDate"]) == ("male", "1990-05-05")
    assert all_agree(net)
    assert open_conflicts(child) == []
    assert "MERGED" in audit_actions(child, uuid)


def test_same_field_is_a_manual_conflict_and_both_keep_their_version(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = shared_patient(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, gender="other")
    sync_until_quiet(net)
    assert read(parent, uuid)["gender"] == "male"
    assert read(child, uuid)["gender"] == "other"
    [conflict] = open_conflicts(child)
    assert conflict.record_uuid == uuid and conflict.paths == ("gender",)
    assert conflict.local()["gender"] == "other" and conflict.remote()["gender"] == "male"
    assert conflict.base() is not None and conflict.base()["gender"] == "female"  # type: ignore[index]
    assert "CONFLICT" in audit_actions(child, uuid)


@pytest.mark.parametrize(
    ("policy", "winner"),
    [("parent-wins", "male"), ("child-wins", "other"), ("newest-wins", "other")],
)
def test_same_field_under_each_policy(tmp_path: Path, policy: str, winner: str) -> None:
    net = make_net(tmp_path / "net", policy)
    try:
        parent, child = net.nodes["parent"], net.nodes["child"]
        uuid = shared_patient(net)
        edit(parent, uuid, gender="male", birthDate="1970-01-01")
        edit(child, uuid, gender="other")  # the newer edit
        sync_until_quiet(net)
        for node in (parent, child):
            body = read(node, uuid)
            assert (body["gender"], body["birthDate"]) == (winner, "1970-01-01"), node.instance_id
        assert open_conflicts(child) == []
        assert all_agree(net)
    finally:
        net.stop()


def test_a_stale_push_is_refused_with_412_and_becomes_a_conflict(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = shared_patient(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, gender="other")
    config, db = child.open()
    try:
        result = run_push(config, db)  # no pull first: the child's base is stale
    finally:
        db.dispose()
    assert result.outcome == "ok" and result.failures == 0
    [conflict] = open_conflicts(child)
    assert conflict.operation == "PUSH" and conflict.paths == ("gender",)
    assert read(parent, uuid)["gender"] == "male"  # not overwritten
    # The conflict holds the record back: later rounds neither send nor overwrite it.
    sync_round(net)
    assert read(parent, uuid)["gender"] == "male" and read(child, uuid)["gender"] == "other"


def test_a_conflict_does_not_stop_push_when_continue_on_failure_is_off(tmp_path: Path) -> None:
    """A 412 that became a conflict is handled, not a failure: the records after it still go up."""
    # One record a batch: the record after the conflict goes in a later batch.
    settings = {"continue_on_failure": False, "fetch_batch_size": 1}
    net = build_network(tmp_path / "net", PAIR, extra_settings=settings)
    try:
        parent, child = net.nodes["parent"], net.nodes["child"]
        uuid = shared_patient(net)
        edit(parent, uuid, gender="male")
        edit(child, uuid, gender="other")
        later = create_patient(child, "Owusu")
        config, db = child.open()
        try:
            result = run_push(config, db)
        finally:
            db.dispose()
        assert result.outcome == "ok" and result.failures == 0
        [conflict] = open_conflicts(child)
        assert conflict.record_uuid == uuid
        assert read(parent, later)["name"][0]["family"] == "Owusu"
    finally:
        net.stop()


def test_void_against_edit_is_a_conflict(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = shared_patient(net)
    with parent.client() as client:
        client.delete(f"{FHIR}/Patient/{uuid}").raise_for_status()
    edit(child, uuid, gender="other")
    sync_until_quiet(net)
    [conflict] = open_conflicts(child)
    assert conflict.paths == ("@state",)
    assert read(child, uuid)["gender"] == "other"  # the edit is not lost


THREE: tuple[tuple[str, str | None], ...] = (
    ("parent", None),
    ("child", "parent"),
    ("grandchild", "child"),
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhirsync", *args], capture_output=True, text=True, check=False
    )


def test_cli_resolution_converges_a_three_level_tree(tmp_path: Path) -> None:
    net = make_net(tmp_path / "net", tree=THREE)
    try:
        parent, child = net.nodes["parent"], net.nodes["child"]
        grandchild = net.nodes["grandchild"]
        uuid = shared_patient(net)
        edit(parent, uuid, gender="male")
        edit(grandchild, uuid, gender="other", birthDate="2000-01-01")
        sync_until_quiet(net)
        [conflict] = open_conflicts(child)  # the middle node met the parent's change
        assert conflict.paths == ("gender",)
        listed = cli("conflicts", str(child.node_dir), "list")
        assert listed.returncode == 0 and conflict.uuid[:8] in listed.stdout
        waiting = cli("status", str(child.node_dir))
        assert waiting.returncode == 1, waiting.stdout + waiting.stderr  # needs an administrator
        assert "conflicts: 1 open" in waiting.stdout
        assert f"{conflict.uuid} pull patient/{uuid} fields: gender" in waiting.stdout
        unknown = cli("conflicts", str(child.node_dir), "show", "no-such-conflict")
        assert unknown.returncode == 2, unknown.stdout + unknown.stderr  # as for `audit show`
        assert "usage: no conflict 'no-such-conflict'" in unknown.stderr
        shown = cli("conflicts", str(child.node_dir), "show", conflict.uuid)
        assert shown.returncode == 0 and "gender" in shown.stdout and "male" in shown.stdout
        merged = {**conflict.local(), "gender": "unknown"}
        file = tmp_path / "merged.json"
        file.write_text(json.dumps(merged))
        done = cli("conflicts", str(child.node_dir), "resolve", conflict.uuid, "--take", str(file))
        assert done.returncode == 0, done.stdout + done.stderr
        assert open_conflicts(child) == []
        sync_until_quiet(net)
        for node in net.nodes.values():
            body = read(node, uuid)
            assert (body["gender"], body["birthDate"]) == ("unknown", "2000-01-01")
        assert all_agree(net)
        assert "RESOLVED" in audit_actions(child, uuid)
        settled = cli("status", str(child.node_dir))
        assert settled.returncode == 0, settled.stdout + settled.stderr
        assert "conflicts: none open" in settled.stdout
        bad = cli("conflicts", str(child.node_dir), "resolve", conflict.uuid, "--take", "local")
        assert bad.returncode == 1 and "no open conflict" in bad.stderr
    finally:
        net.stop()


def test_sync2_resolve_endpoint_for_java_tools(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = shared_patient(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, gender="other")
    sync_until_quiet(net)
    [conflict] = open_conflicts(child)
    url = "/ws/rest/sync2/conflict/resolve"
    with child.client() as client:
        bad = client.post(url, params={"conflictUuid": conflict.uuid}, content=b"not json")
        assert bad.status_code == 400
        merged = {**conflict.remote(), "birthDate": "1999-09-09"}
        done = client.post(url, params={"conflictUuid": conflict.uuid}, json=merged)
        assert done.status_code == 202, done.text
        assert "url" in done.json()
        again = client.post(url, params={"conflictUuid": conflict.uuid}, json=merged)
        assert again.status_code == 404
    assert open_conflicts(child) == []
    assert read(parent, uuid)["birthDate"] == "1999-09-09"  # pushed by the endpoint
    sync_until_quiet(net)
    assert all_agree(net)
