"""A long push run keeps its run lock: it is extended as batches are settled, so a second run
(a "Push now" or `fhirsync push` beside serve's schedule) cannot start and send them again."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.conftest import NodeFactory
from tests.integration.test_push import _FlakySender, create_patients, make_pair, push

from fhirsync.settings import NodeConfig
from fhirsync.store import locks
from fhirsync.sync import push_run
from fhirsync.sync.push_run import http_sender


def test_a_push_longer_than_the_lock_ttl_keeps_its_lock(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push_run, "LOCK_TTL", 0.5)
    _parent, child = make_pair(node_factory, fetch_batch_size=2)
    create_patients(child, 12)  # 6 batches of 0.2 s: past the lock's first expiry
    taken: list[bool] = []

    def slow() -> None:
        time.sleep(0.2)

    def try_second_run() -> None:
        _config, db = child.open()
        try:
            taken.append(locks.acquire(db, push_run.LOCK_NAME, locks.new_owner(), 60))
        finally:
            db.dispose()

    def factory(config: NodeConfig) -> Any:
        hooks = {n: slow for n in range(1, 6)} | {6: try_second_run}
        return _FlakySender(http_sender(config), hooks)

    finished = push(child, sender_factory=factory)
    assert (finished.outcome, finished.applied) == ("ok", 12)
    assert taken == [False]
