"""Three levels of real nodes: changes climb and descend the tree once each, with no echo."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.conflict_support import edit, read

from fhirsync.sync.push_run import run_push
from fhirsync.sync.runner import run_pull
from fhirsync.testing.network import (
    FHIR,
    Network,
    all_agree,
    build_network,
    create_patient,
    event_count,
    run_on,
    snapshot,
    sync_round,
    sync_until_quiet,
)

# Pull needs the feed reader and client facade of the transport work; skip until they exist.
pytest.importorskip("fhirsync.feed.reader")
pytest.importorskip("fhirsync.clients.facade")

REST = "/ws/rest/v1"


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "tree")
    yield network
    network.stop()


def origin_of(net: Network, node: str, uuid: str) -> str:
    from sqlalchemy import select

    from fhirsync.store.tables import records

    _config, db = net.nodes[node].open()
    try:
        with db.read() as conn:
            return str(
                conn.execute(select(records.c.origin).where(records.c.uuid == uuid)).scalar_one()
            )
    finally:
        db.dispose()


def test_changes_reach_every_level_and_stop(net: Network) -> None:
    nodes = net.nodes
    from_grandchild = create_patient(nodes["grandchild-a1"], "Deep")
    from_sibling = create_patient(nodes["child-b"], "Side")
    from_top = create_patient(nodes["parent"], "Top")
    assert sync_round(net).moved > 0
    for name in nodes:
        held = snapshot(nodes[name])
        assert {from_grandchild, from_sibling, from_top} <= set(held), name
    assert all_agree(net)
    # The first origin is kept all the way: the parent knows the grandchild made it.
    assert origin_of(net, "parent", from_grandchild) == "grandchild-a1"
    assert origin_of(net, "child-b", from_grandchild) == "grandchild-a1"
    assert origin_of(net, "grandchild-a1", from_sibling) == "child-b"
    # Quiescence: more rounds move nothing and no log grows (no ping-pong).
    counts = {name: event_count(h) for name, h in nodes.items()}
    for _ in range(2):
        assert sync_round(net).moved == 0
    assert {name: event_count(h) for name, h in nodes.items()} == counts


def test_updates_and_voids_travel_both_ways(net: Network) -> None:
    nodes = net.nodes
    deep = create_patient(nodes["grandchild-a1"], "Deep")
    side = create_patient(nodes["child-b"], "Side")
    sync_until_quiet(net)
    # An update on the other branch reaches the grandchild; a void on the grandchild reaches b.
    with nodes["child-b"].client() as client:
        body = client.get(f"{FHIR}/Patient/{deep}").json()
        body["name"][0]["given"] = ["Updated"]
        assert client.put(f"{FHIR}/Patient/{deep}", json=body).status_code == 200
    with nodes["grandchild-a1"].client() as client:
        assert client.delete(f"{FHIR}/Patient/{side}").status_code == 204
    sync_until_quiet(net)
    for name, handle in nodes.items():
        held = snapshot(handle)
        assert side not in held, name
        with handle.client() as client:
            given = client.get(f"{FHIR}/Patient/{deep}").json()["name"][0]["given"]
            assert given == ["Updated"], name
            assert client.get(f"{FHIR}/Patient/{side}").status_code == 410, name
    assert all_agree(net)
    counts = {name: event_count(h) for name, h in nodes.items()}
    assert sync_round(net).moved == 0
    assert {name: event_count(h) for name, h in nodes.items()} == counts


@pytest.fixture
def paged_net(tmp_path: Path) -> Iterator[Network]:
    # One entry per feed page: two changes of one record always land on different pages.
    network = build_network(tmp_path / "tree", extra_settings={"feed_page_size": 1})
    yield network
    network.stop()


def test_a_parent_edit_behind_a_relayed_change_reaches_the_grandchild(paged_net: Network) -> None:
    """The middle node reads the grandchild's relayed change on one page and fetches the parent's
    newer version; that version must not be labelled as the grandchild's own (it would skip it)."""
    net = paged_net
    nodes = net.nodes
    deep = create_patient(nodes["grandchild-a1"], "Deep")
    sync_until_quiet(net)
    edit(nodes["grandchild-a1"], deep, gender="male")
    run_on(nodes["grandchild-a1"], run_push)
    run_on(nodes["child-a"], run_push)
    edit(nodes["parent"], deep, birthDate="1970-01-01")
    sync_until_quiet(net)
    for name, handle in nodes.items():
        body = read(handle, deep)
        assert (body["gender"], body["birthDate"]) == ("male", "1970-01-01"), name
    assert all_agree(net)


def test_metadata_retired_and_restored_below_is_restored_everywhere(net: Network) -> None:
    """A REST unretire made on a middle node reaches its parent and the other branch (its
    stored body carries no ``retired`` flag, so the push must ask for the restore)."""
    nodes = net.nodes
    with nodes["child-a"].client() as client:
        created = client.post(f"{REST}/visittype", json={"name": "Outreach", "description": "d"})
        uuid = created.raise_for_status().json()["uuid"]
    sync_until_quiet(net)
    with nodes["child-a"].client() as client:
        assert client.delete(f"{REST}/visittype/{uuid}").status_code == 204
    sync_until_quiet(net)
    with nodes["child-a"].client() as client:
        client.post(f"{REST}/visittype/{uuid}", json={"retired": False}).raise_for_status()
    sync_until_quiet(net)
    for name, handle in nodes.items():
        with handle.client() as client:
            assert client.get(f"{REST}/visittype/{uuid}").json()["retired"] is False, name
    with nodes["child-a"].client() as client:
        assert client.delete(f"{REST}/visittype/{uuid}", params={"purge": ""}).status_code == 204
    sync_until_quiet(net)
    for name, handle in nodes.items():
        with handle.client() as client:
            assert client.get(f"{REST}/visittype/{uuid}").status_code == 404, name


def test_a_relayed_change_arriving_while_the_middle_node_pushes_a_merge_goes_up(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A middle node's push first sends the records a merge left to push; a grandchild's change
    of such a record that arrives while that push runs must go up too, not be taken as sent."""
    from fhirsync.sync import push as push_module

    nodes = net.nodes
    shared = create_patient(nodes["parent"], "Shared")
    sync_until_quiet(net)
    edit(nodes["grandchild-a1"], shared, gender="male")
    run_on(nodes["grandchild-a1"], run_push)
    edit(nodes["parent"], shared, birthDate="1970-01-01")
    run_on(nodes["child-a"], run_pull)  # merges the two: queued for the parent
    send_pending = push_module._send_pending

    def then_the_grandchild_pushes(*args: Any, **kwargs: Any) -> set[str]:
        sent = send_pending(*args, **kwargs)
        if shared in sent:
            edit(nodes["grandchild-a1"], shared, name=[{"family": "Late"}])
            run_on(nodes["grandchild-a1"], run_push)
        return sent

    monkeypatch.setattr(push_module, "_send_pending", then_the_grandchild_pushes)
    run_on(nodes["child-a"], run_push)
    monkeypatch.undo()
    sync_until_quiet(net)
    for name, handle in nodes.items():
        body = read(handle, shared)
        assert body["name"][0]["family"] == "Late", name
        assert (body["gender"], body["birthDate"]) == ("male", "1970-01-01"), name
    assert all_agree(net)


def test_a_retried_change_keeps_the_node_it_came_from(net: Network) -> None:
    """An encounter made on child-b waits on child-a for its patient, which failed there; when
    the fixed patient arrives the encounter is retried from the failure kept for it. That entry
    named child-b as its origin; the retried record was labelled as the parent's, and so was
    every copy below child-a."""
    from tests.integration.pull_support import encounter, new_uuid, patient, put, write_raw

    nodes = net.nodes
    sync_until_quiet(net)
    bad, visit = new_uuid(), new_uuid()
    write_raw(nodes["parent"], "patient", [{**patient(bad, "Bad"), "gender": "robot"}], "parent")
    write_raw(nodes["parent"], "encounter", [encounter(visit, bad)], "child-b")
    run_on(nodes["child-a"], run_pull)  # the patient fails, the encounter waits for it
    assert visit not in snapshot(nodes["child-a"])
    put(nodes["parent"], patient(bad, "Fixed"))
    run_on(nodes["child-a"], run_pull)  # the patient arrives; the encounter is retried
    assert origin_of(net, "child-a", visit) == "child-b"
    run_on(nodes["grandchild-a1"], run_pull)
    assert origin_of(net, "grandchild-a1", visit) == "child-b"
