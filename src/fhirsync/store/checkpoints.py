"""Checkpointing a server's SQLite WAL while the server is idle.

A commit that leaves ``WAL_AUTOCHECKPOINT_PAGES`` in the WAL copies them into the database file
there and then, on the request that made the commit. A server copies them sooner, when nothing
has been committed for a while, so a burst of pushed Bundles or served pages starts with an
empty WAL and rarely reaches that limit. A PASSIVE checkpoint never waits for readers or
writers: what it cannot copy now, a later one copies.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError

from fhirsync.store.engine import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What one PASSIVE checkpoint reported: ``busy`` (1 if it could not run at all), the pages
    in the WAL, and those copied into the database (all of them when equal)."""

    busy: int
    wal_pages: int
    copied_pages: int


class IdleCheckpointer:
    """A daemon thread that checkpoints ``db`` after ``idle`` seconds without a commit."""

    def __init__(self, db: Database, *, idle: float = 1.0, poll: float = 0.5) -> None:
        self.db, self.idle, self.poll = db, idle, poll
        self.done: list[Checkpoint] = []
        """The checkpoints made, oldest first (the last few)."""
        self._last_commit = time.monotonic()
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        event.listen(db.engine, "commit", self._committed)

    def _committed(self, _conn: Any) -> None:
        self._last_commit = time.monotonic()
        self._dirty = True

    def start(self) -> None:
        """Start checkpointing (a no-op for PostgreSQL, which manages its own log)."""
        if not self.db.is_sqlite or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the checkpoint it may be making)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        event.remove(self.db.engine, "commit", self._committed)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            if self._dirty and time.monotonic() - self._last_commit >= self.idle:
                self._dirty = False
                try:
                    self._checkpoint()
                except (sqlite3.Error, SQLAlchemyError):  # retried on the next idle spell
                    log.warning("WAL checkpoint failed; retried when idle again", exc_info=True)
                    self._dirty = True

    def _checkpoint(self) -> None:
        # A raw connection in autocommit mode: inside a transaction the checkpoint could not
        # copy past that transaction's snapshot.
        raw = self.db.engine.raw_connection()
        try:
            row = raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            raw.close()
        result = Checkpoint(*row)
        self.done = [*self.done[-9:], result]
        log.debug("WAL checkpoint: %s", result)
