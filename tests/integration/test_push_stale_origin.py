"""A record taken from the parent after a 412 (a stale base on push), or when a conflict closes,
is the parent's change: its origin says so, this node's children receive it, and it never goes
back up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.conflict_support import edit, read
from tests.integration.test_push import snapshot

from fhirsync.feed.parse import parse_page
from fhirsync.sync.push_run import run_push
from fhirsync.sync.runner import run_pull
from fhirsync.testing.network import (
    Network,
    build_network,
    create_patient,
    event_count,
    run_on,
    sync_until_quiet,
)

TREE = (("parent", None), ("child", "parent"), ("grand", "child"))


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    extra = {"conflict_policies": {"patient": "parent-wins"}}
    network = build_network(tmp_path / "net", TREE, extra_settings=extra)
    yield network
    network.stop()


def feed_origin(net: Network, node: str, uuid: str) -> str | None:
    """The origin ``node``'s own patient feed gives the newest change of ``uuid``."""
    with net.nodes[node].client() as client:
        answer = client.get("/ws/atomfeed/patient/recent")
        answer.raise_for_status()
    page = parse_page(answer.content, url="recent")
    [*_, newest] = [e for e in page.entries if any(uuid in link for link in e.links.values())]
    return newest.origin


def test_the_parents_copy_taken_after_a_412_keeps_the_parent_as_origin(net: Network) -> None:
    parent, child, grand = (net.nodes[n] for n in ("parent", "child", "grand"))
    uuid = create_patient(parent, "Mensah")
    sync_until_quiet(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, gender="other")
    pushed = run_on(child, run_push)  # no pull first: the base is stale, the parent answers 412
    assert (pushed.outcome, pushed.failures) == ("ok", 0), pushed
    assert read(child, uuid)["gender"] == "male"  # parent-wins: the parent's copy is taken
    config, db = child.open()
    db.dispose()
    parent_label = config.parent_url  # what pull labels a change with when no origin is named
    _hash, _state, origin, via = snapshot(child)[uuid]
    assert (origin, via) == (parent_label, "parent")
    assert feed_origin(net, "child", uuid) == parent_label
    # The child's own children receive it; it is no local change to send up again.
    assert run_on(grand, run_pull).outcome == "ok"
    assert read(grand, uuid)["gender"] == "male"
    before = event_count(parent)
    again = run_on(child, run_push)
    assert (again.outcome, again.applied) == ("ok", 0), again
    assert event_count(parent) == before


def test_the_parents_copy_taken_when_a_conflict_closes_keeps_the_parent_as_origin(
    tmp_path: Path,
) -> None:
    # A conflict closes by itself when the local side goes back to the base: the parent's
    # version is taken, and was labelled as this node's change.
    pair = build_network(tmp_path / "pair", (("parent", None), ("child", "parent")))
    try:
        parent, child = pair.nodes["parent"], pair.nodes["child"]
        uuid = create_patient(parent, "Mensah")
        sync_until_quiet(pair)
        edit(parent, uuid, gender="male")
        edit(child, uuid, gender="other")
        assert run_on(child, run_pull).outcome == "ok"  # a conflict (manual policy)
        edit(child, uuid, gender="female")  # back to the base: the conflict closes
        assert read(child, uuid)["gender"] == "male"
        config, db = child.open()
        db.dispose()
        _hash, _state, origin, via = snapshot(child)[uuid]
        assert (origin, via) == (config.parent_url, "parent")
        assert feed_origin(pair, "child", uuid) == config.parent_url
    finally:
        pair.stop()
