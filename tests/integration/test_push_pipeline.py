"""Push sends the next batch while the one before is settled: a parent that dies with a batch
answered but not yet committed, and the next one on its way, loses nothing and duplicates
nothing (real parent process, SIGKILLed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import NodeFactory
from tests.integration.test_push import (
    CHILD_PASSWORD,
    FHIR,
    _FlakySender,
    add_child_account,
    create_patients,
    open_failures,
    patient,
    push,
    snapshot,
)

from fhirsync.errors import ConnectionFailed
from fhirsync.settings import NodeConfig
from fhirsync.store import conflicts as conflict_repo
from fhirsync.sync.push_run import http_sender
from fhirsync.sync.status import RunEvent, RunProgress
from fhirsync.testing.network import event_count
from fhirsync.testing.servers import NodeHandle


def crashing_pair(node_factory: NodeFactory, batch: int) -> tuple[NodeHandle, NodeHandle]:
    """A parent served by a real process (so it can be SIGKILLed) and its child."""
    parent = node_factory("parent", start=False).start_process()
    add_child_account(parent, "child-a", CHILD_PASSWORD)
    child = node_factory(
        "child-a",
        parent=parent,
        parent_user="child-a",
        parent_password=CHILD_PASSWORD,
        extra_settings={"retry_base_delay": 0.01, "fetch_batch_size": batch},
    )
    return parent, child


class _KillAfterAnswer(_FlakySender):
    """Kills the parent right after it answered call ``after`` (the answer still arrives)."""

    def __init__(self, real: Any, parent: NodeHandle, after: int) -> None:
        super().__init__(real, {})
        self.parent, self.after = parent, after

    def send(self, *args: Any, **kwargs: Any) -> Any:
        result = super().send(*args, **kwargs)
        if self.calls == self.after:
            self.parent.kill()
        return result


def killing_after(parent: NodeHandle, call: int) -> Callable[[NodeConfig], Any]:
    def factory(config: NodeConfig) -> Any:
        return _KillAfterAnswer(http_sender(config), parent, call)

    return factory


def test_parent_killed_between_batches_resumes_without_loss_or_duplicates(
    node_factory: NodeFactory,
) -> None:
    parent, child = crashing_pair(node_factory, batch=3)
    uuids = create_patients(child, 12)
    progress: list[RunEvent] = []
    finished = push(child, sender_factory=killing_after(parent, 2), listener=progress.append)
    assert finished.outcome == "unreachable"
    # Batches 1 and 2 were answered and committed; batch 3 never reached the parent.
    assert [e.done for e in progress if isinstance(e, RunProgress)] == [3, 6]
    parent.start_process()
    assert len(snapshot(parent)) == 6
    finished = push(child)
    assert (finished.outcome, finished.events_read, finished.applied) == ("ok", 6, 6)
    assert set(snapshot(parent)) == set(uuids)
    assert event_count(parent) == 12
    assert push(child).events_read == 0
    assert event_count(parent) == 12


def test_parent_killed_while_a_stale_answer_is_settled_and_the_next_batch_is_sent(
    node_factory: NodeFactory,
) -> None:
    """Batch 2 is answered (one record applied, one refused as stale) and the parent dies: the
    child sends batch 3 (connection refused) while it settles batch 2, whose 412 needs the
    parent's copy (unreachable). Neither batch commits; the next run sends both again: the
    applied record converges without a second write, the stale one becomes a conflict, and
    batch 3 arrives once."""
    parent, child = crashing_pair(node_factory, batch=2)
    uuids = create_patients(child, 6)
    assert push(child).outcome == "ok"
    stale = uuids[2]
    with parent.client() as client:
        answer = client.put(f"{FHIR}/Patient/{stale}", json=patient("ParentEdit", id=stale))
        assert answer.status_code == 200, answer.text
    with child.client() as client:
        for n, uuid in enumerate(uuids):
            answer = client.put(f"{FHIR}/Patient/{uuid}", json=patient(f"Edit{n}", id=uuid))
            assert answer.status_code == 200, answer.text
    before = event_count(parent)
    assert push(child, sender_factory=killing_after(parent, 2)).outcome == "unreachable"
    parent.start_process()
    # Batch 1 (uuids 0, 1) and uuids[3] of batch 2 were applied before the parent died.
    assert event_count(parent) == before + 3
    finished = push(child)
    # Batch 1 stays committed; batches 2 and 3 are read and sent again.
    assert (finished.outcome, finished.failures, finished.events_read) == ("ok", 0, 4)
    mine, got = snapshot(child), snapshot(parent)
    assert {u: got[u][0] for u in uuids if u != stale} == {
        u: mine[u][0] for u in uuids if u != stale
    }
    assert event_count(parent) == before + 5
    assert open_failures(child) == []
    _config, db = child.open()
    try:
        with db.read() as conn:
            assert [c.record_uuid for c in conflict_repo.list_conflicts(conn)] == [stale]
    finally:
        db.dispose()
    assert push(child).events_read == 0
    assert event_count(parent) == before + 5


def test_batch_queued_behind_a_failed_send_is_never_sent(node_factory: NodeFactory) -> None:
    """Batch 3 is queued behind batch 2 before batch 2 is answered; batch 2's send fails (the
    parent itself stays up): batch 3 must not go out after it, and only batch 1 commits."""
    parent, child = crashing_pair(node_factory, batch=3)
    uuids = create_patients(child, 12)
    senders: list[_FlakySender] = []

    def refuse() -> None:
        raise ConnectionFailed("connection reset before the batch went out")

    def factory(config: NodeConfig) -> Any:
        senders.append(_FlakySender(http_sender(config), {2: refuse}))
        return senders[0]

    assert push(child, sender_factory=factory).outcome == "unreachable"
    assert senders[0].calls == 2
    assert len(snapshot(parent)) == 3
    finished = push(child)
    assert (finished.outcome, finished.events_read, finished.applied) == ("ok", 9, 9)
    assert set(snapshot(parent)) == set(uuids)
    assert event_count(parent) == 12
