"""``fhirsync conflicts NODE_DIR list|show|resolve`` on a child holding many real conflicts."""

from __future__ import annotations

import pytest
from tests.conftest import NodeFactory
from tests.integration.cli_support import fhirsync
from tests.integration.pull_support import new_uuid, patient, write_raw
from typer.testing import Result

from fhirsync.testing.servers import NodeHandle

MANY = 203


def make_conflicts(node_factory: NodeFactory, count: int) -> tuple[NodeHandle, Result]:
    """A child with ``count`` open conflicts (both sides changed each patient's gender), and
    the output of the pull that found them."""
    parent = node_factory("parent")
    uuids = [new_uuid() for _ in range(count)]
    write_raw(parent, "patient", [patient(u, "Shared") for u in uuids], "parent")
    child = node_factory("child", parent=parent, start=False)
    assert fhirsync("pull", str(child.node_dir)).exit_code == 0
    write_raw(parent, "patient", [{**patient(u, "Shared"), "gender": "male"} for u in uuids], "p")
    write_raw(child, "patient", [{**patient(u, "Shared"), "gender": "other"} for u in uuids], "c")
    return child, fhirsync("pull", str(child.node_dir))


@pytest.fixture
def conflicted(node_factory: NodeFactory) -> NodeHandle:
    """A child with ``MANY`` open conflicts."""
    return make_conflicts(node_factory, MANY)[0]


def test_pull_counts_conflicts_apart_from_applied_records(node_factory: NodeFactory) -> None:
    # A pulled change kept as a conflict was reported as "1 records applied", exit 0: nothing
    # told the administrator that a person has to decide (`status` exits 1 for it).
    _child, pulled = make_conflicts(node_factory, 2)
    assert pulled.exit_code == 1, pulled.output
    assert "0 records applied, 0 failed, 2 conflict(s) kept for a person" in pulled.stdout
    assert "fhirsync conflicts" in pulled.stdout, pulled.stdout


def test_list_says_when_it_shows_only_some(conflicted: NodeHandle) -> None:
    # The list stopped at 200 rows with nothing to say there were more.
    node = str(conflicted.node_dir)
    listed = fhirsync("conflicts", node, "list")
    assert listed.exit_code == 0, listed.output
    assert f"showing 200 of {MANY} open conflict(s)" in listed.stdout, listed.stdout
    assert "--limit" in listed.stdout
    every = fhirsync("conflicts", node, "list", "--limit", "1000")
    assert every.exit_code == 0, every.output
    assert f"{MANY} open conflict(s)" in every.stdout and "showing" not in every.stdout
    assert every.stdout.count("│ patient ") == MANY
    with_closed = fhirsync("conflicts", node, "list", "--all", "--limit", "5")
    assert with_closed.exit_code == 0, with_closed.output
    assert "showing the newest 5 conflict(s); there are more" in with_closed.stdout


def test_an_unknown_conflict_is_a_usage_error_for_show_and_resolve(conflicted: NodeHandle) -> None:
    # `show` answered 2 (usage, DESIGN §3) and `resolve` 1 for the same mistyped id.
    node = str(conflicted.node_dir)
    for args in (["show", "no-such-conflict"], ["resolve", "no-such-conflict", "--take", "local"]):
        done = fhirsync("conflicts", node, *args)
        assert done.exit_code == 2, (args, done.output)
        assert "usage: no conflict 'no-such-conflict'" in done.stderr, done.stderr
