"""A long pull run keeps its run lock: it is extended as pages commit, not only per category."""

from __future__ import annotations

import time

import pytest

from fhirsync.store import locks
from fhirsync.store.engine import open_database
from fhirsync.sync import runner
from fhirsync.sync.status import RunEvent, RunProgress, on_progress


def test_page_progress_extends_the_run_lock(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "LOCK_TTL", 0.4)
    db = open_database(db_url)
    try:
        owner = locks.new_owner()
        assert locks.acquire(db, "pull", owner, 0.4)
        seen: list[RunEvent] = []
        # What the runner wraps its listener in (one keeper per run).
        listener = on_progress(seen.append, locks.keeper(db, "pull", owner, runner.LOCK_TTL))
        for n in range(6):  # 0.6 s of pages: past the lock's first expiry
            time.sleep(0.1)
            listener(RunProgress("pull", "patient", n, None))
        assert locks.holder(db, "pull") == owner
        assert not locks.acquire(db, "pull", locks.new_owner(), 0.4)
        assert len(seen) == 6
    finally:
        db.dispose()
