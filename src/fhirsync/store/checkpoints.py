"""Checkpointing a server's SQLite WAL while the database is idle.

A commit that leaves ``WAL_AUTOCHECKPOINT_PAGES`` in the WAL copies them into the database file
there and then, on the request that made the commit. A server copies them sooner, once nothing
has been committed for a while, so a burst of pushed Bundles or served pages starts with an
empty WAL and rarely reaches that limit. "Committed" is read off changes of the WAL file's
modification time, so commits by other processes (a ``fhirsync pull`` beside ``serve``) count
too. A PASSIVE checkpoint never waits for readers or writers: what it cannot copy now, a later
one copies.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass

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
    """A daemon thread that checkpoints ``db`` once its WAL was last written ``idle`` seconds
    ago, and not again until it is written again."""

    def __init__(self, db: Database, *, idle: float = 1.0, poll: float = 0.5) -> None:
        self.db, self.idle, self.poll = db, idle, poll
        self.done: list[Checkpoint] = []
        """The checkpoints made, oldest first (the last few)."""
        path = db.engine.url.database if db.is_sqlite else None
        self._wal = f"{path}-wal" if path else None
        self._copied: int | None = None  # the WAL's modification time at the last checkpoint
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start checkpointing (a no-op for PostgreSQL, which manages its own log)."""
        if self._wal is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the checkpoint it may be making)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _written(self) -> int | None:
        """The WAL file's modification time (ns), None when there is no WAL file."""
        assert self._wal is not None
        try:
            return os.stat(self._wal).st_mtime_ns
        except FileNotFoundError:
            return None

    def _loop(self) -> None:
        seen: int | None = None  # the WAL's modification time at the last poll
        seen_at = time.monotonic()
        while not self._stop.wait(self.poll):
            written = self._written()
            if written != seen:
                # Idle time is counted on the monotonic clock from when a new write was seen.
                # Compared with the wall clock, a clock set back an hour (NTP correcting a
                # server's clock) stopped the checkpoints for that hour.
                seen, seen_at = written, time.monotonic()
            if written is None or written == self._copied:
                continue
            if time.monotonic() - seen_at < self.idle:
                continue
            try:
                self._checkpoint()
            except (sqlite3.Error, SQLAlchemyError):  # tried again on the next poll
                log.warning("WAL checkpoint failed; tried again when idle", exc_info=True)
                continue
            self._copied = written

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
