"""Push from a child to its parent over real HTTP: origins, no echo, failures, parent outages."""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import select
from tests.integration.pull_support import edit_sync2

from fhirsync.categories import Category
from fhirsync.clients.base import OutgoingChange, SendResult
from fhirsync.clients.push_http import HttpPushSender
from fhirsync.errors import ConnectionFailed
from fhirsync.records import RecordWrite
from fhirsync.settings import NodeConfig
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store import failures, users
from fhirsync.store import records as store
from fhirsync.store.tables import audit, records
from fhirsync.sync.push_run import http_sender, run_push
from fhirsync.sync.runner import run_pull
from fhirsync.sync.status import RecordFailed, RunEvent, RunFinished
from fhirsync.testing.network import event_count, run_on
from fhirsync.testing.servers import NodeHandle

NodeFactory = Callable[..., NodeHandle]
FHIR = "/ws/fhir2/R4"
CHILD_PASSWORD = "child-a-password"


def patient(family: str = "Boateng", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": family, "given": ["Yaw"]}],
        "gender": "male",
        "birthDate": "1979-11-02",
        **extra,
    }


def add_child_account(parent: NodeHandle, instance_id: str, password: str) -> None:
    _config, db = parent.open()
    try:
        with db.write() as conn:
            users.add(conn, instance_id, password, "child", instance_id)
    finally:
        db.dispose()


def make_pair(node_factory: NodeFactory, **child_settings: object) -> tuple[NodeHandle, NodeHandle]:
    parent = node_factory("parent")
    add_child_account(parent, "child-a", CHILD_PASSWORD)
    child = node_factory(
        "child-a",
        parent=parent,
        parent_user="child-a",
        parent_password=CHILD_PASSWORD,
        extra_settings={"retry_base_delay": 0.01, **child_settings},
    )
    return parent, child


def push(node: NodeHandle, **kwargs: Any) -> RunFinished:
    return run_on(node, run_push, **kwargs)


def create_patients(node: NodeHandle, count: int) -> list[str]:
    uuids = [str(uuidlib.uuid4()) for _ in range(count)]
    with node.client() as client:
        for i, uuid in enumerate(uuids):
            answer = client.put(f"{FHIR}/Patient/{uuid}", json=patient(f"Family{i}", id=uuid))
            assert answer.status_code == 201, answer.text
    return uuids


def snapshot(node: NodeHandle) -> dict[str, tuple[str, str, str, str | None]]:
    """uuid → (content hash, state, origin, via) of every record."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(
                    records.c.uuid,
                    records.c.content_hash,
                    records.c.state,
                    records.c.origin,
                    records.c.via,
                )
            )
            return {r.uuid: (r.content_hash, r.state, r.origin, r.via) for r in rows}
    finally:
        db.dispose()


def open_failures(node: NodeHandle) -> list[failures.Failure]:
    _config, db = node.open()
    try:
        with db.read() as conn:
            return failures.list_open(conn, "push")
    finally:
        db.dispose()


@pytest.mark.postgres
def test_push_sends_local_changes_with_their_origin(node_factory: NodeFactory) -> None:
    parent, child = make_pair(node_factory)
    uuids = create_patients(child, 5)
    with child.client() as client:
        assert client.delete(f"{FHIR}/Patient/{uuids[0]}").status_code == 204
        assert client.delete(f"{FHIR}/Patient/{uuids[1]}").status_code == 204
        answer = client.put(f"{FHIR}/Patient/{uuids[1]}", json=patient("Back", id=uuids[1]))
        assert answer.status_code == 200
    seen: list[RunEvent] = []
    finished = push(child, listener=seen.append)
    assert finished.outcome == "ok"
    assert finished.events_read == 8
    assert finished.applied == 5
    got = snapshot(parent)
    # Created and voided before any push: there is nothing to void on the parent (spec §5.10),
    # as pull skips a void of a record it never had.
    assert set(got) == set(uuids[1:])
    mine = snapshot(child)
    for uuid in uuids[1:]:
        assert got[uuid][0] == mine[uuid][0]
        assert got[uuid][1:] == ("active", "child-a", "child:child-a")
    # Quiescence: another push reads nothing and the parent's log does not grow.
    before = event_count(parent)
    again = push(child)
    assert (again.outcome, again.events_read, again.applied) == ("ok", 0, 0)
    assert event_count(parent) == before


def test_updates_and_unvoids_travel_up(node_factory: NodeFactory) -> None:
    parent, child = make_pair(node_factory)
    uuid = create_patients(child, 1)[0]
    assert push(child).outcome == "ok"
    with child.client() as client:
        assert client.delete(f"{FHIR}/Patient/{uuid}").status_code == 204
    assert push(child).outcome == "ok"
    assert snapshot(parent)[uuid][1] == "voided"
    with child.client() as client:
        answer = client.put(f"{FHIR}/Patient/{uuid}", json=patient("Renamed", id=uuid))
        assert answer.status_code == 200
    assert push(child).outcome == "ok"
    assert snapshot(parent)[uuid][:2] == (snapshot(child)[uuid][0], "active")


def test_pulled_changes_are_not_pushed_back(node_factory: NodeFactory) -> None:
    parent, child = make_pair(node_factory)
    local = create_patients(child, 2)
    # A change that arrived from the parent (as pull writes it) must not be echoed up.
    _config, db = child.open()
    pulled = str(uuidlib.uuid4())
    try:
        with db.write() as conn:
            store.write(
                conn,
                RecordWrite("patient", pulled, patient("Pulled"), "parent", via="parent"),
            )
    finally:
        db.dispose()
    finished = push(child)
    assert finished.outcome == "ok"
    assert finished.events_read == 3
    assert finished.applied == 2
    assert set(snapshot(parent)) == set(local)


def store_invalid_patient(child: NodeHandle) -> str:
    """An invalid Patient stored on ``child`` without the API's validation (as data from an older
    node version might be), so the parent rejects it; its uuid."""
    bad = str(uuidlib.uuid4())
    _config, db = child.open()
    try:
        with db.write() as conn:
            store.write(
                conn, RecordWrite("patient", bad, patient("Bad", gender="femme"), "child-a")
            )
    finally:
        db.dispose()
    return bad


def test_rejected_record_is_parked_visible_and_retryable(node_factory: NodeFactory) -> None:
    parent, child = make_pair(node_factory, record_max_attempts=1)
    good = create_patients(child, 2)
    bad = store_invalid_patient(child)
    seen: list[RunEvent] = []
    finished = push(child, listener=seen.append)
    assert finished.outcome == "failures"
    assert finished.failures == 1
    assert set(snapshot(parent)) == set(good)
    parked = open_failures(child)
    assert [(f.record_uuid, f.status, f.error_class) for f in parked] == [
        (bad, "parked", "InvalidResource")
    ]
    assert "gender" in parked[0].error_message
    assert [e.uuid for e in seen if isinstance(e, RecordFailed)] == [bad]
    # Parked: a plain run does not retry it; the feed moved on.
    assert push(child).events_read == 0
    assert open_failures(child)[0].status == "parked"
    # Retried by hand while still invalid: parked again, nothing sent.
    _config, db = child.open()
    try:
        with db.write() as conn:
            assert failures.requeue(conn) == 1
    finally:
        db.dispose()
    assert push(child).outcome == "failures"
    assert open_failures(child)[0].status == "parked"
    # Fixed locally: the new event sends it and the failure is resolved.
    with child.client() as client:
        assert client.put(f"{FHIR}/Patient/{bad}", json=patient("Good", id=bad)).status_code == 200
    assert push(child).outcome == "ok"
    assert open_failures(child) == []
    assert set(snapshot(parent)) == {*good, bad}


def push_audit_rows(node: NodeHandle, record_uuid: str) -> int:
    """PUSH audit rows about ``record_uuid`` on ``node``."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            query = select(audit.c.id).where(
                audit.c.record_uuid == record_uuid, audit.c.operation == "PUSH"
            )
            return len(conn.execute(query).all())
    finally:
        db.dispose()


def test_with_continue_on_failure_off_nothing_after_a_rejected_record_is_sent(
    node_factory: NodeFactory,
) -> None:
    # The run whose retry of the rejected record came due sent it again, and then left it out
    # of the feed: the records after it went up (and the marker passed it) though it failed.
    # One record a batch: the records of a batch are sent together, whatever fails among them.
    parent, child = make_pair(
        node_factory, record_max_attempts=2, continue_on_failure=False, fetch_batch_size=1
    )
    edit_sync2(child, persistFailureAudit=True)
    bad = store_invalid_patient(child)
    later = create_patients(child, 2)
    runs = []
    for _ in range(3):
        runs.append(push(child))
        time.sleep(0.1)  # past the retry delay
    assert [r.outcome for r in runs] == ["failures"] * 3
    assert set(snapshot(parent)).isdisjoint(later)
    [parked] = open_failures(child)
    # Sent again by each run, as the log stops just before it, but tried twice, not thrice: a
    # run that finds it failing as before, its retry not due, is no new attempt nor audit row.
    assert (parked.record_uuid, parked.status, parked.attempts) == (bad, "parked", 2)
    assert push_audit_rows(child, bad) == 2
    # Fixed locally: the new event sends it, then the rest follows.
    with child.client() as client:
        assert client.put(f"{FHIR}/Patient/{bad}", json=patient("Good", id=bad)).status_code == 200
    assert push(child).outcome == "ok"
    assert open_failures(child) == []
    assert set(snapshot(parent)) == {bad, *later}


def test_a_rejected_push_closes_when_a_pull_brings_both_sides_to_the_same_version(
    node_factory: NodeFactory,
) -> None:
    # The parent refused the child's edit; the parent's own later edit of the same field wins
    # on pull (parent-wins), so both hold the parent's version and nothing is left to send. The
    # parked push stayed open for good: status exited 1 until someone retried or dismissed it.
    parent, child = make_pair(
        node_factory, record_max_attempts=1, conflict_policies={"patient": "parent-wins"}
    )
    [uuid] = create_patients(child, 1)
    assert push(child).outcome == "ok"
    _config, db = child.open()
    try:
        with db.write() as conn:  # an edit the parent refuses (stored without validation)
            store.write(
                conn, RecordWrite("patient", uuid, patient(gender="femme", id=uuid), "child-a")
            )
    finally:
        db.dispose()
    assert push(child).outcome == "failures"
    assert [(f.record_uuid, f.status) for f in open_failures(child)] == [(uuid, "parked")]
    with parent.client() as client:
        fixed = client.put(f"{FHIR}/Patient/{uuid}", json=patient(gender="unknown", id=uuid))
        assert fixed.status_code == 200, fixed.text
    pulled = run_on(child, run_pull)
    assert pulled.outcome == "ok", pulled
    assert snapshot(child)[uuid][:2] == snapshot(parent)[uuid][:2]
    assert open_failures(child) == []
    assert push(child).outcome == "ok"


class _FlakySender:
    """Wraps the real sender: runs ``before_call[i]`` before call i (to stop the parent, or to
    lose the answer after the parent applied the batch)."""

    def __init__(self, real: HttpPushSender, hooks: dict[int, Callable[[], None]]) -> None:
        self.real = real
        self.hooks = hooks
        self.calls = 0

    def send(
        self,
        category: Category,
        changes: Sequence[OutgoingChange],
        *,
        origin: str,
        preferred: str | None = None,
        in_order: bool = False,
    ) -> SendResult:
        self.calls += 1
        hook = self.hooks.get(self.calls)
        if hook is not None:
            hook()
        return self.real.send(
            category, changes, origin=origin, preferred=preferred, in_order=in_order
        )

    def close(self) -> None:
        self.real.close()


class _LosingSender(_FlakySender):
    """Sends for real, then loses the parent's answer to the ``lose``-th request."""

    def __init__(self, config: NodeConfig, lose: int) -> None:
        super().__init__(http_sender(config), {})
        self.lose = lose

    def send(self, category: Category, changes: Sequence[OutgoingChange], **kw: Any) -> SendResult:
        result = super().send(category, changes, **kw)
        if self.calls == self.lose:
            raise ConnectionFailed("connection reset after the parent applied the batch")
        return result


def test_parent_down_mid_push_resumes_without_loss_or_duplicates(
    node_factory: NodeFactory,
) -> None:
    parent, child = make_pair(node_factory, fetch_batch_size=3)
    uuids = create_patients(child, 10)

    def factory(config: NodeConfig) -> Any:
        return _FlakySender(http_sender(config), {3: parent.stop})

    finished = push(child, sender_factory=factory)
    assert finished.outcome == "unreachable"
    assert len(snapshot_running_after_restart(parent)) == 6
    # The parent is back: the rest arrives, nothing twice.
    finished = push(child)
    assert finished.outcome == "ok"
    assert finished.applied == 4
    assert set(snapshot(parent)) == set(uuids)
    assert event_count(parent) == 10


def snapshot_running_after_restart(parent: NodeHandle) -> dict[str, Any]:
    parent.start()
    return snapshot(parent)


def test_lost_acknowledgement_resends_without_duplicates(node_factory: NodeFactory) -> None:
    parent, child = make_pair(node_factory, fetch_batch_size=4)
    uuids = create_patients(child, 6)

    def factory(config: NodeConfig) -> Any:
        return _LosingSender(config, lose=2)

    assert push(child, sender_factory=factory).outcome == "unreachable"
    assert set(snapshot(parent)) == set(uuids)
    before = event_count(parent)
    finished = push(child)
    assert (finished.outcome, finished.events_read, finished.applied) == ("ok", 2, 2)
    assert event_count(parent) == before == 6


def test_unknown_parent_credentials_stop_the_run(node_factory: NodeFactory) -> None:
    parent = node_factory("parent")
    child = node_factory(
        "child-x", parent=parent, parent_user="nobody", parent_password="wrong-password"
    )
    create_patients(child, 1)
    finished = push(child)
    assert finished.outcome == "configuration"  # the parent answers: exit 2, not 3
    assert "401" in (finished.error or "")
    assert snapshot(parent) == {}


def test_greeting_a_parent_that_is_down_leaves_the_error_to_the_first_batch(
    node_factory: NodeFactory,
) -> None:
    parent, child = make_pair(node_factory)
    uuids = create_patients(child, 2)
    parent.stop()
    finished = push(child)
    assert finished.outcome == "unreachable"
    assert "connect" in (finished.error or "").lower()
    parent.start()
    assert push(child).outcome == "ok"
    assert set(snapshot(parent)) == set(uuids)


def test_a_greeted_sender_sends_after_its_greeting(node_factory: NodeFactory) -> None:
    parent, child = make_pair(node_factory)
    uuids = create_patients(child, 3)
    config, db = child.open()
    try:
        sender = http_sender(config)
        try:
            assert sender._greeting is not None  # started by http_sender
            finished = run_push(config, db, sender_factory=lambda _config: sender)
            assert sender._greeting is None  # the first send waited for it
        finally:
            sender.close()
    finally:
        db.dispose()
    assert (finished.outcome, finished.applied) == ("ok", 3)
    assert set(snapshot(parent)) == set(uuids)


def test_cli_push_exit_codes(node_factory: NodeFactory) -> None:
    from typer.testing import CliRunner

    from fhirsync.cli.main import build_app

    runner = CliRunner()
    parent, child = make_pair(node_factory)
    create_patients(child, 3)
    done = runner.invoke(build_app(), ["push", str(child.node_dir)])
    assert done.exit_code == 0, done.output
    assert "3 records sent" in done.output
    assert len(snapshot(parent)) == 3
    parent.stop()
    create_patients(child, 1)
    down = runner.invoke(build_app(), ["push", str(child.node_dir)])
    assert down.exit_code == 3
    orphan = node_factory("orphan", start=False)
    assert runner.invoke(build_app(), ["push", str(orphan.node_dir)]).exit_code == 2


def test_scheduled_push_in_serve(node_factory: NodeFactory) -> None:
    import time

    from fhirsync.node import update_sync2

    parent = node_factory("parent")
    add_child_account(parent, "child-a", CHILD_PASSWORD)
    child = node_factory(
        "child-a",
        start=False,
        parent=parent,
        parent_user="child-a",
        parent_password=CHILD_PASSWORD,
    )
    update_sync2(child.node_dir, {"push": {"enabled": True, "schedule": 1}})
    child.start()
    uuids = create_patients(child, 2)
    deadline = time.monotonic() + 20
    while set(snapshot(parent)) != set(uuids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(snapshot(parent)) == set(uuids)


def test_small_batches_with_a_record_in_several_batches(node_factory: NodeFactory) -> None:
    """Batches of 2 commit on a background thread while the next is sent; a record changed in
    several batches waits for the batch before it, so every send names the right base and the
    parent ends with the child's versions, no failures, no conflicts."""
    parent, child = make_pair(node_factory, fetch_batch_size=2)
    uuids = create_patients(child, 4)
    assert push(child).outcome == "ok"
    with child.client() as client:
        for n, uuid in enumerate([uuids[0], uuids[1], uuids[0], uuids[2], uuids[0], uuids[3]]):
            answer = client.put(f"{FHIR}/Patient/{uuid}", json=patient(f"Edit{n}", id=uuid))
            assert answer.status_code == 200, answer.text
    finished = push(child)
    assert (finished.outcome, finished.failures) == ("ok", 0)
    mine, got = snapshot(child), snapshot(parent)
    assert {u: got[u][:2] for u in uuids} == {u: (mine[u][0], "active") for u in uuids}
    assert open_failures(child) == []
    _config, db = child.open()
    try:
        with db.read() as conn:
            assert conflict_repo.list_conflicts(conn) == []
    finally:
        db.dispose()
    before = event_count(parent)
    assert push(child).events_read == 0
    assert event_count(parent) == before


def test_a_parent_url_with_no_sync_api_parks_nothing_and_names_the_setting(
    node_factory: NodeFactory,
) -> None:
    parent, child = make_pair(node_factory)
    uuids = create_patients(child, 2)
    with child.client() as client:
        answer = client.post("/ws/rest/v1/visittype", json={"name": "Outreach", "description": "x"})
        assert answer.status_code == 201, answer.text
    right = edit_sync2(child)["general"]["parentFeedLocation"]
    edit_sync2(child, parentFeedLocation=f"{right}/openmrs")  # a Java context path, wrongly added
    wrong = push(child)
    assert wrong.outcome == "unreachable", wrong
    assert wrong.error is not None and "check general.parentFeedLocation" in wrong.error
    assert open_failures(child) == []  # nothing parked, nothing to retry by hand
    edit_sync2(child, parentFeedLocation=right)
    fixed = push(child)
    assert (fixed.outcome, fixed.applied) == ("ok", 3), fixed
    assert set(uuids) <= set(snapshot(parent))
