"""Audit retention while a server runs: rows older than ``audit_retention_days`` are deleted at
start-up and then every hour, whether or not anyone opens the admin pages. The same pass forgets
the signed-out sessions that have expired (``store.signouts``)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from fhirsync.store import audit_query, signouts
from fhirsync.store.engine import Database

log = logging.getLogger(__name__)
EVERY_SECONDS = 3600.0
"""How often a serving node deletes the audit rows that became too old."""


class AuditRetention:
    """Deletes old audit rows of ``db`` now, then every :data:`EVERY_SECONDS` in a daemon
    thread, until stopped."""

    def __init__(self, db: Database, days: int, node_id: str) -> None:
        self.db, self.days, self.node_id = db, days, node_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Delete old rows now (a node starts with its retention applied), then start the
        hourly thread."""
        if self._thread is not None:
            return
        self.clean_up()
        self._thread = threading.Thread(target=self._loop, name="audit-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the deletion it may be making)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def clean_up(self) -> int:
        """Delete the rows older than the retention; how many (0 when the database refused:
        tried again at the next turn)."""
        try:
            with self.db.write() as conn:
                removed = audit_query.apply_retention(conn, self.days)
                signouts.prune(conn, datetime.now(UTC))
        except SQLAlchemyError as exc:
            log.warning(
                "node %s: audit retention failed, tried again in %.0fs: %s",
                self.node_id,
                EVERY_SECONDS,
                str(getattr(exc, "orig", None) or exc).splitlines()[0],
            )
            return 0
        if removed:
            log.info("node %s: audit retention removed %d rows", self.node_id, removed)
        return removed

    def _loop(self) -> None:
        while not self._stop.wait(EVERY_SECONDS):
            self.clean_up()
