"""Committing pages on a background thread, in order, while the next page is prepared.

Pull and push both spend about as long writing a page's outcome (records, events, audit rows,
agreed versions, failures, the marker) as they spend waiting for the parent on the next one. A
:class:`PageCommitter` overlaps the two: :meth:`~PageCommitter.submit` hands a page to one writer
thread and returns. Pages still commit one at a time, in the order submitted, each in one
transaction, so a crash leaves whole pages and the marker never passes an uncommitted one.

What the caller must keep: anything that READS local state a pending page may change waits for it
first (:meth:`~PageCommitter.wait`; :meth:`~PageCommitter.touches` says whether a pending page
changes given records).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

from fhirsync.store.local import PageCommit


class Committing(Protocol):
    """The local side's commit (``store.local.StoreLocalSide.commit``)."""

    def commit(self, batch: PageCommit, *, now: datetime) -> Any:
        """Apply ``batch`` in one transaction."""
        ...


class PageCommitter:
    """Commits pages on one background thread, in submission order, one transaction each."""

    def __init__(self, local: Committing) -> None:
        self._local = local
        self._thread: ThreadPoolExecutor | None = None
        self._pending: Future[Any] | None = None
        self._pending_uuids: frozenset[str] = frozenset()

    def submit(self, batch: PageCommit, now: datetime, uuids: Iterable[str] = ()) -> None:
        """Commit ``batch`` after the page before it; returns without waiting.

        ``uuids`` are the records the page changes, for :meth:`touches`.
        """
        self.wait()
        if self._thread is None:
            # Made on the first page: a pull forks its validation workers (if any) first.
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="page-commit")
        self._pending = self._thread.submit(self._local.commit, batch, now=now)
        self._pending_uuids = frozenset(uuids)

    def wait(self) -> None:
        """Block until the page handed over last is committed; its error is raised here."""
        pending, self._pending = self._pending, None
        self._pending_uuids = frozenset()
        if pending is not None:
            pending.result()

    def touches(self, uuids: Iterable[str]) -> bool:
        """True when the pending page changes any of ``uuids``."""
        return self._pending is not None and not self._pending_uuids.isdisjoint(uuids)

    def close(self) -> None:
        """Wait for the last page, then stop the thread."""
        try:
            self.wait()
        finally:
            if self._thread is not None:
                self._thread.shutdown(wait=True)
                self._thread = None
