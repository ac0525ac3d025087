"""Push and conflicts under faults: lost answers, resends, kills, three-level races."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.integration.conflict_support import (
    PAIR,
    edit,
    open_conflicts,
    read,
    void,
)
from tests.integration.test_push import _LosingSender, open_failures

from fhirsync.categories import Category
from fhirsync.clients.base import OutgoingChange, SendResult
from fhirsync.settings import NodeConfig
from fhirsync.sync.push_run import run_push
from fhirsync.testing.network import (
    FHIR,
    Network,
    all_agree,
    build_network,
    create_patient,
    event_count,
    run_on,
    sync_until_quiet,
)
from fhirsync.testing.servers import NodeHandle


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "net", PAIR)
    yield network
    network.stop()


def push_losing(node: NodeHandle, lose: int = 1) -> str:
    finished = run_on(node, run_push, sender_factory=lambda c: _LosingSender(c, lose))
    return finished.outcome


def shared(net: Network) -> str:
    uuid = create_patient(net.nodes["parent"], "Mensah")
    sync_until_quiet(net)
    return uuid


def resend_changes_nothing(net: Network) -> None:
    """The next push resends what the parent already applied: no new parent events, no conflict
    or failure on the child, and the tree converges."""
    parent, child = net.nodes["parent"], net.nodes["child"]
    before = event_count(parent)
    finished = run_on(child, run_push)
    assert finished.outcome == "ok", finished
    assert event_count(parent) == before
    assert open_conflicts(child) == [] and open_failures(child) == []
    sync_until_quiet(net)
    assert all_agree(net)


def test_lost_answer_to_an_update(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = shared(net)
    edit(child, uuid, gender="male")
    assert push_losing(child) == "unreachable"
    assert read(parent, uuid)["gender"] == "male"  # the parent applied the lost batch
    resend_changes_nothing(net)
    assert open_conflicts(child) == []
    # the next edit goes through without a 412
    edit(child, uuid, gender="other")
    sync_until_quiet(net)
    assert read(parent, uuid)["gender"] == "other"
    assert open_conflicts(child) == [] and all_agree(net)


def test_lost_answer_to_a_void(net: Network) -> None:
    child = net.nodes["child"]
    uuid = shared(net)
    void(child, uuid)
    assert push_losing(child) == "unreachable"
    resend_changes_nothing(net)
    assert open_conflicts(child) == [] and open_failures(child) == []


def test_lost_answer_to_an_edit_then_void(net: Network) -> None:
    child = net.nodes["child"]
    uuid = shared(net)
    edit(child, uuid, gender="male")
    void(child, uuid)
    assert push_losing(child, 2) == "unreachable"
    resend_changes_nothing(net)


def test_lost_answer_to_an_unvoid(net: Network) -> None:
    child = net.nodes["child"]
    uuid = shared(net)
    void(child, uuid)
    sync_until_quiet(net)
    with child.client() as client:
        r = client.put(
            f"{FHIR}/Patient/{uuid}", json={"resourceType": "Patient", "id": uuid, "gender": "male"}
        )
        assert r.status_code in (200, 201), r.text
    assert push_losing(child) == "unreachable"
    resend_changes_nothing(net)


class _EditingSender(_LosingSender):
    """Runs ``during`` while the first batch is on its way to the parent, then sends it."""

    def __init__(self, config: NodeConfig, during: Callable[[], None]) -> None:
        super().__init__(config, lose=0)
        self.during: Callable[[], None] | None = during

    def send(self, category: Category, changes: Sequence[OutgoingChange], **kw: Any) -> SendResult:
        during, self.during = self.during, None
        if during is not None:
            during()
        return super().send(category, changes, **kw)


def test_a_local_edit_made_while_a_stale_push_is_in_flight_is_kept(net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = shared(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, birthDate="1990-05-05")

    def edit_here() -> None:
        edit(child, uuid, name=[{"family": "Owusu", "given": ["Esi"]}])

    finished = run_on(child, run_push, sender_factory=lambda c: _EditingSender(c, edit_here))
    assert finished.outcome == "ok", finished
    body = read(child, uuid)
    assert body["name"] == [{"family": "Owusu", "given": ["Esi"]}]
    sync_until_quiet(net)
    assert all_agree(net)
    for node in (parent, child):
        body = read(node, uuid)
        assert (body["gender"], body["birthDate"]) == ("male", "1990-05-05")
        assert body["name"] == [{"family": "Owusu", "given": ["Esi"]}]
    assert open_conflicts(child) == []
