"""Scheduled push inside ``fhirsync serve``: every ``push.schedule`` seconds when ``push.enabled``.

Independent of the pull schedule (its own thread, its own lock, its own run state). While the
parent is unreachable it backs off per the RetryPolicy and resets on the next success, like the
pull scheduler. The database lock of ``push_run`` makes a scheduled run skip while a manual
``fhirsync push`` of the same node is going on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from fhirsync.errors import FhirsyncError
from fhirsync.settings import NodeConfig
from fhirsync.store import runs
from fhirsync.store.engine import Database
from fhirsync.sync.push import OPERATION
from fhirsync.sync.push_run import run_push
from fhirsync.sync.retry import RetryPolicy

log = logging.getLogger(__name__)
_LOGGED_AT = frozenset({1, 2, 4, 8, 16, 32, 64})
Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


class PushScheduler:
    """Runs push on a schedule in a background thread until :meth:`stop`."""

    def __init__(self, config: NodeConfig, db: Database) -> None:
        self.config = config
        self.db = db
        self.policy = RetryPolicy.from_settings(config.settings)
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """True when ``push.enabled`` and a parent is configured."""
        return self.config.sync2.push.enabled and self.config.parent_url is not None

    def start(self) -> None:
        """Start the loop (no-op when scheduled push is disabled)."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="push-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to stop and wait for the current run to end (stopping is no failure)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def next_delay(self, outcome: str) -> float:
        """The schedule after a run that reached the parent; a growing backoff (capped by the
        schedule) while it is unreachable."""
        schedule = float(self.config.sync2.push.schedule or 300)
        if outcome in ("unreachable", "error"):
            self.failures += 1
            return min(schedule, self.policy.delay(self.failures))
        self.failures = 0
        return schedule

    def _loop(self) -> None:
        while not self._stop.is_set():
            outcome, error = self._run_once()
            delay = self.next_delay(outcome)
            if self.failures in _LOGGED_AT:
                log.warning("scheduled push failed %d time(s): %s", self.failures, error)
            with self.db.write() as conn:
                runs.save(
                    conn,
                    OPERATION,
                    consecutive_failures=self.failures,
                    backoff_seconds=delay if self.failures else None,
                    next_run_at=datetime.now(UTC) + timedelta(seconds=delay),
                    **({"last_error": error} if error else {}),
                )
            self._stop.wait(delay)

    def _run_once(self) -> tuple[str, str | None]:
        try:
            result = run_push(self.config, self.db)
        except FhirsyncError as exc:  # configuration changed under us: keep serving, report it
            return "error", f"{type(exc).__name__}: {exc}"
        return result.outcome, result.error


def with_push(inner: Lifespan, config: NodeConfig, db: Database) -> Lifespan:
    """``inner`` (the pull scheduler's lifespan) plus the push scheduler beside it."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        scheduler = PushScheduler(config, db)
        async with inner(app):
            scheduler.start()
            try:
                yield
            finally:
                await asyncio.to_thread(scheduler.stop)

    return run
