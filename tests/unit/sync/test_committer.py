"""PageCommitter: pages commit in order on one thread; readers can wait for the records they need."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from fhirsync.store.local import PageCommit
from fhirsync.sync.committer import PageCommitter

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class SlowLocal:
    """Commits wait for ``release``; the order of commits is kept."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.committed: list[str] = []
        self.fail_on: str | None = None

    def commit(self, batch: PageCommit, *, now: datetime) -> Any:
        self.release.wait(10)
        if batch.operation == self.fail_on:
            raise OSError("disk full")
        self.committed.append(batch.operation)


def test_pages_commit_in_order_and_touches_names_the_pending_records() -> None:
    local = SlowLocal()
    committer = PageCommitter(local)
    committer.submit(PageCommit("page-1"), NOW, ["a", "b"])
    assert committer.touches(["x", "b"]) and not committer.touches(["x", "y"])
    assert local.committed == []  # submit returned before the commit
    local.release.set()
    committer.submit(PageCommit("page-2"), NOW, ["c"])  # waits for page 1 first
    assert local.committed[0] == "page-1"
    assert not committer.touches(["a"]) and committer.touches(["c"])
    committer.close()
    assert local.committed == ["page-1", "page-2"]
    assert not committer.touches(["c"])


def test_a_failed_commit_is_raised_to_the_caller() -> None:
    local = SlowLocal()
    local.release.set()
    local.fail_on = "page-1"
    committer = PageCommitter(local)
    committer.submit(PageCommit("page-1"), NOW, ["a"])
    with pytest.raises(OSError, match="disk full"):
        committer.submit(PageCommit("page-2"), NOW, ["b"])
    committer.close()
    assert local.committed == []  # page 2 was never handed over after page 1 failed
