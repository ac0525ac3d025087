"""Voided records in a tree of three levels end the same on every node (found by the chaos test,
``test_chaos_tree.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from tests.integration.conflict_support import edit, open_conflicts, read, void
from tests.integration.pull_support import held

from fhirsync.sync.push_run import run_push
from fhirsync.sync.reconcile import reconciler_for
from fhirsync.sync.resolve import resolve
from fhirsync.sync.runner import run_pull
from fhirsync.testing.network import (
    Network,
    build_network,
    create_patient,
    run_on,
    sync_until_quiet,
)
from fhirsync.testing.servers import NodeHandle

CHAIN: tuple[tuple[str, str | None], ...] = (
    ("parent", None),
    ("child", "parent"),
    ("grandchild", "child"),
)


@pytest.fixture(params=[1000, 1], ids=["one-page", "a-page-each"])
def chain(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Network]:
    # On one page the void and the unvoid collapse; on pages of one entry the void is committed
    # before the unvoid is read.
    extra = {"feed_page_size": request.param}
    network = build_network(tmp_path / "chain", CHAIN, extra_settings=extra)
    yield network
    network.stop()


def _take(node: NodeHandle, side: Literal["local", "remote"]) -> None:
    [conflict] = open_conflicts(node)
    config, db = node.open()
    try:
        resolve(db, reconciler_for(config), conflict.uuid, resolved_by="test", take=side)
    finally:
        db.dispose()


def test_an_unvoid_made_after_taking_the_parents_void_stays(chain: Network) -> None:
    """The grandchild took its parent's void when it resolved a conflict, then unvoided the
    record and pushed the unvoid up. Its next pull read the parent's VOIDED entry (still after
    its marker) and voided the record again; the UNVOIDED entry after it was skipped as the
    grandchild's own change. Every other node held the record active, the grandchild voided."""
    parent, child, grandchild = (chain.nodes[n] for n in ("parent", "child", "grandchild"))
    uuid = create_patient(parent, "Stale")
    sync_until_quiet(chain)
    void(parent, uuid)
    run_on(child, run_pull)  # the child's feed now says VOIDED (from the parent)
    edit(grandchild, uuid, gender="male")
    run_on(grandchild, run_push)  # 412 at the child: the edit against the void is a conflict
    _take(grandchild, "remote")  # the void is taken: the grandchild has seen it
    with grandchild.client() as client:  # ... and undoes it
        body = client.get(
            f"/ws/fhir2/R4/Patient/{uuid}", headers={"X-Fhirsync-Inactive": "include"}
        ).json()
        assert client.put(f"/ws/fhir2/R4/Patient/{uuid}", json=body).status_code == 200
    sync_until_quiet(chain)
    assert read(grandchild, uuid)["id"] == uuid  # 410 if voided again
    states = {name: held(node)[("patient", uuid)] for name, node in chain.nodes.items()}
    assert len(set(states.values())) == 1, states
    assert states["parent"][1] == "active"


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "tree")
    yield network
    network.stop()


def test_a_voided_record_changed_above_is_changed_below(tree: Network) -> None:
    """child-b's edit, made while the parent voided the record, reaches the parent as a change of
    the voided record. child-a announced it as UPDATED, and the grandchild, fetching it, found
    it gone (410) and skipped it: it kept the old body of the void for good."""
    nodes = tree.nodes
    uuid = create_patient(nodes["child-b"], "Edited")
    sync_until_quiet(tree)
    edit(nodes["child-b"], uuid, gender="male")
    void(nodes["parent"], uuid)
    run_on(nodes["child-a"], run_pull)
    run_on(nodes["grandchild-a1"], run_pull)  # the parent's void, with the old body
    run_on(nodes["child-b"], run_push)  # 412: a conflict on child-b (an edit against a void)
    _take(nodes["child-b"], "local")
    void(nodes["child-b"], uuid)  # the edited record voided: the parent gets the edit, voided
    sync_until_quiet(tree)
    copies = {name: held(node)[("patient", uuid)] for name, node in nodes.items()}
    assert len(set(copies.values())) == 1, copies
    assert copies["parent"][1] == "voided"
