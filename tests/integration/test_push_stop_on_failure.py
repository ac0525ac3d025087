"""Push with ``continue_on_failure`` off, on real parent and child nodes: nothing after a failed
record goes up until it is fixed or dismissed (an encounter after its failed patient)."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from tests.integration.conflict_support import edit, read
from tests.integration.test_push import (
    FHIR,
    NodeFactory,
    create_patients,
    make_pair,
    open_failures,
    patient,
    push,
    snapshot,
    store_invalid_patient,
)

from fhirsync.records import RecordWrite
from fhirsync.store import records as store
from fhirsync.testing.servers import NodeHandle

REST = "/ws/rest/v1"


def store_record(node: NodeHandle, category: str, uuid: str, body: dict[str, Any]) -> None:
    """Store ``body`` on ``node`` without the API's checks (as an older node version might)."""
    _config, db = node.open()
    try:
        with db.write() as conn:
            store.write(conn, RecordWrite(category, uuid, body, node.instance_id))
    finally:
        db.dispose()


def test_records_after_a_rejected_one_in_the_same_batch_are_not_sent(
    node_factory: NodeFactory,
) -> None:
    # One batch holds the bad record and those after it: the whole batch used to go up (the
    # parent answered it entry by entry) and only the marker stopped at the bad record.
    parent, child = make_pair(node_factory, record_max_attempts=2, continue_on_failure=False)
    before = create_patients(child, 3)
    bad = store_invalid_patient(child)
    later = create_patients(child, 3)
    finished = push(child)
    assert finished.outcome == "failures", finished
    assert set(snapshot(parent)) == set(before)
    assert [(f.record_uuid, f.status) for f in open_failures(child)] == [(bad, "retrying")]
    # Fixed locally: it goes up, and the rest after it.
    with child.client() as client:
        assert client.put(f"{FHIR}/Patient/{bad}", json=patient("Good", id=bad)).status_code == 200
    assert push(child).outcome == "ok"
    assert open_failures(child) == []
    assert set(snapshot(parent)) == {*before, bad, *later}


def test_rest_records_after_a_rejected_one_are_not_sent(node_factory: NodeFactory) -> None:
    parent, child = make_pair(node_factory, record_max_attempts=2, continue_on_failure=False)
    first, bad, last = (str(uuidlib.uuid4()) for _ in range(3))
    store_record(child, "visittype", first, {"name": "Outreach", "description": "x"})
    store_record(child, "visittype", bad, {"description": "no name"})
    store_record(child, "visittype", last, {"name": "Home visit", "description": "y"})
    finished = push(child)
    assert finished.outcome == "failures", finished
    assert first in snapshot(parent) and last not in snapshot(parent)
    assert [f.record_uuid for f in open_failures(child)] == [bad]


def test_a_stale_base_does_not_stop_the_records_after_it(node_factory: NodeFactory) -> None:
    # A 412 is a conflict to decide (here a clean merge), not a failure: the log goes on.
    parent, child = make_pair(node_factory, continue_on_failure=False)
    first, *rest = create_patients(child, 3)
    assert push(child).outcome == "ok"
    edit(parent, first, gender="female")
    for uuid in (first, *rest):
        edit(child, uuid, birthDate="1990-05-05")
    finished = push(child)
    assert (finished.outcome, finished.failures) == ("ok", 0), finished
    for uuid in rest:
        assert read(parent, uuid)["birthDate"] == "1990-05-05"
    merged = read(child, first)
    assert (merged["gender"], merged["birthDate"]) == ("female", "1990-05-05")
    assert open_failures(child) == []


def dismiss(node: NodeHandle, failure_id: int) -> None:
    """Dismiss a failure as ``fhirsync audit NODE_DIR dismiss`` does."""
    from typer.testing import CliRunner

    from fhirsync.cli.main import build_app

    args = ["audit", str(node.node_dir), "dismiss", str(failure_id), "--reason", "wrong data"]
    done = CliRunner().invoke(build_app(), args)
    assert done.exit_code == 0, done.output


def test_dismissing_the_blocking_record_lets_the_log_move_on(node_factory: NodeFactory) -> None:
    # Dismissed, the record was sent again at the next run (the marker had stopped before it),
    # failed again as a new failure, and the records after it never went up.
    parent, child = make_pair(node_factory, record_max_attempts=2, continue_on_failure=False)
    bad = store_invalid_patient(child)
    later = create_patients(child, 2)
    assert push(child).outcome == "failures"
    [failure] = open_failures(child)
    dismiss(child, failure.id)
    finished = push(child)
    assert (finished.outcome, finished.failures) == ("ok", 0), finished
    assert open_failures(child) == []
    assert set(snapshot(parent)) == set(later)
    assert push(child).events_read == 0
    # A later change of the dismissed record is a new change: it goes up.
    with child.client() as client:
        assert client.put(f"{FHIR}/Patient/{bad}", json=patient("Good", id=bad)).status_code == 200
    assert push(child).outcome == "ok"
    assert set(snapshot(parent)) == {bad, *later}


def test_an_edit_then_void_after_a_rejected_record_stays_unsent(
    node_factory: NodeFactory,
) -> None:
    # A void after a local edit sends the edit first: it went before the batch, so it reached
    # the parent although a record before it in the log was refused.
    parent, child = make_pair(node_factory, record_max_attempts=2, continue_on_failure=False)
    edited = create_patients(child, 1)[0]
    assert push(child).outcome == "ok"
    bad = store_invalid_patient(child)
    edit(child, edited, gender="female")
    with child.client() as client:
        assert client.delete(f"{FHIR}/Patient/{edited}").status_code == 204
    finished = push(child)
    assert finished.outcome == "failures", finished
    assert [f.record_uuid for f in open_failures(child)] == [bad]
    assert read(parent, edited)["gender"] == "male"  # neither the edit nor the void went up
    assert snapshot(parent)[edited][1] == "active"
    with child.client() as client:
        assert client.put(f"{FHIR}/Patient/{bad}", json=patient("Good", id=bad)).status_code == 200
    assert push(child).outcome == "ok"
    assert open_failures(child) == []
    assert snapshot(parent)[edited][:2] == snapshot(child)[edited][:2]
    assert snapshot(parent)[edited][1] == "voided"
