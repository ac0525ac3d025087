"""A local void, then the same void pulled from the parent, then a push in small batches.

Found by the chaos test (``test_chaos_tree.py``): the child's own VOIDED event is read in one
batch, but the record's origin is now the parent's (the pull that converged wrote it), so the
push sends the void as the parent's change; the parent refuses it (403, "a child may not act as
this node") and every later push stops there ("configuration"), for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.conflict_support import PAIR, edit, void

from fhirsync.sync.push_run import run_push
from fhirsync.sync.runner import run_pull
from fhirsync.testing.network import (
    Network,
    build_network,
    create_patient,
    run_on,
    sync_until_quiet,
)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "pair", PAIR, extra_settings={"fetch_batch_size": 1})
    yield network
    network.stop()


def test_a_void_made_on_both_sides_does_not_stop_the_push(pair: Network) -> None:
    parent, child = pair.nodes["parent"], pair.nodes["child"]
    uuid = create_patient(parent, "Both")
    sync_until_quiet(pair)
    void(child, uuid)
    edit(parent, uuid, gender="male")
    void(parent, uuid)
    run_on(child, run_pull)  # both voided, the parent's body: the record is labelled the parent's
    create_patient(child, "After")  # one more event after the pulled one
    finished = run_on(child, run_push)
    assert (finished.outcome, finished.applied, finished.failures) == ("ok", 1, 0), finished
