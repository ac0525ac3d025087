"""Scheduled pull inside ``fhirsync serve`` (spec §8.1): every ``pull.schedule`` seconds when
``pull.enabled``, backing off per the RetryPolicy while the parent is unreachable.

The loop runs in a thread (the engine is synchronous). Stopping it is not a failure. Its backoff and
last error are kept in the run state, so ``fhirsync status`` and the UI show them. The database run
lock makes a scheduled run skip (not wait) while a manual run of the same node is going on.
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
from fhirsync.sync.retry import RetryPolicy
from fhirsync.sync.runner import run_pull

log = logging.getLogger(__name__)


class PullScheduler:
    """Runs pull on a schedule in a background thread until :meth:`stop`."""

    def __init__(self, config: NodeConfig, db: Database) -> None:
        self.config = config
        self.db = db
        self.policy = RetryPolicy.from_settings(config.settings)
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """True when ``pull.enabled`` and a parent is configured."""
        return self.config.sync2.pull.enabled and self.config.parent_url is not None

    def start(self) -> None:
        """Start the loop (no-op when scheduled pull is disabled)."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="pull-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to stop and wait for the current run to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def next_delay(self, outcome: str) -> float:
        """Seconds until the next run: the schedule after success, a growing backoff after
        an unreachable parent (reset by the next success)."""
        schedule = float(self.config.sync2.pull.schedule or 300)
        if outcome in ("unreachable", "error"):
            self.failures += 1
            return min(schedule, self.policy.delay(self.failures))
        self.failures = 0
        return schedule

    def _loop(self) -> None:
        while not self._stop.is_set():
            outcome, error = self._run_once()
            delay = self.next_delay(outcome)
            if self.failures and self.failures in (1, 2, 4, 8, 16, 32, 64):  # rate-limited log
                log.warning("scheduled pull failed %d time(s): %s", self.failures, error)
            with self.db.write() as conn:
                runs.save(
                    conn,
                    "pull",
                    consecutive_failures=self.failures,
                    backoff_seconds=delay if self.failures else None,
                    next_run_at=datetime.now(UTC) + timedelta(seconds=delay),
                    **({"last_error": error} if error else {}),
                )
            self._stop.wait(delay)

    def _run_once(self) -> tuple[str, str | None]:
        try:
            result = run_pull(self.config, self.db)
        except FhirsyncError as exc:  # configuration changed under us: keep serving, report it
            return "error", f"{type(exc).__name__}: {exc}"
        return result.outcome, result.error


def lifespan(
    config: NodeConfig, db: Database
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """An ASGI lifespan that runs the pull scheduler while the app serves."""

    @asynccontextmanager
    async def run(_app: Any) -> AsyncIterator[None]:
        scheduler = PullScheduler(config, db)
        scheduler.start()
        try:
            yield
        finally:
            await asyncio.to_thread(scheduler.stop)

    return run
