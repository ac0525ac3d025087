"""Scheduled pull and push inside ``fhirsync serve`` (spec §8.1).

Each direction runs every ``{pull,push}.schedule`` seconds when ``{pull,push}.enabled``, in its own
thread (the engine is synchronous), independent of the other. Both flags and schedules are read
as the loop goes, so a change saved on the admin page applies within seconds. While the parent
is unreachable it backs off per the RetryPolicy, capped by the schedule, and resets on the next
success. Stopping is not a failure: a pull run ends after the page it is on when serve stops or
pull is disabled (outcome "stopped"). Backoff and last error are kept in the run state, so
``fhirsync status`` and the UI show them. The database run lock makes a scheduled run skip (not
wait) while a manual run of the same node and direction is going on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from fhirsync.clients import sockets
from fhirsync.clients.registry import unknown_preferences
from fhirsync.errors import FhirsyncError, RunStopped
from fhirsync.settings import NodeConfig, SyncMethodConfig, unused_settings
from fhirsync.store import runs
from fhirsync.store.checkpoints import IdleCheckpointer
from fhirsync.store.engine import Database
from fhirsync.store.retention import AuditRetention
from fhirsync.sync import pull_context, push
from fhirsync.sync.push_run import run_push
from fhirsync.sync.retry import RetryPolicy
from fhirsync.sync.runner import run_pull
from fhirsync.sync.status import Listener, RunEvent, RunFinished, RunProgress

log = logging.getLogger(__name__)
DEFAULT_SCHEDULE = 300.0
STOP_GRACE = 1.0
"""Seconds a stopping scheduler waits for its run to end by itself before cutting its
connections to the parent (:meth:`Scheduler.stop`)."""
CONFIG_CHECK_SECONDS = 2.0
"""How often a waiting scheduler looks at the configuration again."""
OVERDUE_AFTER = timedelta(seconds=60)
"""How late an idle scheduler's next run may be before /health, the dashboard and ``fhirsync
status`` call it overdue. A run starts within CONFIG_CHECK_SECONDS of its time and holds the run
lock while it goes on, so a minute late means no run could start or save its state: the database
is write-locked by another program, or ``fhirsync serve`` is not running."""
Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]
RunOnce = Callable[[NodeConfig, Database, Listener], RunFinished]
"""One run; it calls the listener after each page, which raises RunStopped to end it there."""


def is_scheduled(config: NodeConfig, operation: str) -> bool:
    """True when ``operation`` ("pull" or "push") runs on a schedule: enabled, with a parent."""
    method = config.sync2.pull if operation == pull_context.OPERATION else config.sync2.push
    return method.enabled and config.parent_url is not None


def overdue_since(
    state: runs.RunState, *, scheduled: bool, running: bool, now: datetime | None = None
) -> datetime | None:
    """When the next run of a scheduled, idle direction was due, if that is more than
    OVERDUE_AFTER ago; None when it is not overdue.

    While the database stays write-locked the scheduler can neither run nor save its next run
    time, and the node otherwise looked healthy: /health said "ok" and nothing synced.
    """
    if not scheduled or running or state.next_run_at is None:
        return None
    late = (now or datetime.now(UTC)) - state.next_run_at
    return state.next_run_at if late > OVERDUE_AFTER else None


class Scheduler:
    """Runs one direction (pull or push) on its schedule in a background thread until stopped."""

    def __init__(
        self,
        config: NodeConfig,
        db: Database,
        operation: str,
        method: Callable[[NodeConfig], SyncMethodConfig],
        run_once: RunOnce,
    ) -> None:
        self.config = config
        self.db = db
        self.operation = operation
        self.policy = RetryPolicy.from_settings(config.settings)
        self.failures = 0
        self._method = method
        self._run_once_fn = run_once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """True when this direction is enabled and a parent is configured."""
        return self._method(self.config).enabled and self.config.parent_url is not None

    def start(self) -> None:
        """Start the loop. It runs while this direction is enabled and idles while it is not,
        reading the configuration each time: enabling, disabling or rescheduling on the admin
        page takes effect without a restart."""
        if self._thread is None:
            name = f"{self.operation.lower()}-scheduler"
            self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to stop and wait for the current run to end (stopping is no failure).

        A run still going after STOP_GRACE seconds is waiting on the parent (a pull ends after
        the page it is on; a push's batch is answered in well under that): its connections to
        the parent are cut, and it ends as when the network drops, recorded as stopped.
        """
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        thread.join(STOP_GRACE)
        while thread.is_alive() and time.monotonic() < deadline:
            if self.config.parent_url is not None:
                # Again and again: a run between two requests opens its next connection later.
                sockets.cut_url(self.config.parent_url)
            thread.join(0.2)

    def next_delay(self, outcome: str) -> float:
        """The schedule after a run that reached the parent; a growing backoff (capped by the
        schedule) while it is unreachable."""
        schedule = float(self._method(self.config).schedule or DEFAULT_SCHEDULE)
        if outcome in ("unreachable", "configuration", "error"):
            self.failures += 1
            return min(schedule, self.policy.delay(self.failures))
        self.failures = 0
        return schedule

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.enabled:
                self.failures = 0
                self._stop.wait(CONFIG_CHECK_SECONDS)
                continue
            outcome, error = self._run_once()
            if self._stop.is_set() and outcome == "unreachable":
                # Its connections were cut by stop(): no failure, no backoff.
                self._stopped()
                return
            schedule = self._method(self.config).schedule  # read before the delay is made of it
            failed_before = self.failures
            delay = self.next_delay(outcome)
            if failed_before and not self.failures:
                log.info(
                    "node %s: scheduled %s works again after %d failed runs",
                    self.config.instance_id,
                    self.operation,
                    failed_before,
                )
            # At 1, 2, 4, 8, ... failures in a row: a long outage logs a few lines, not one a
            # run. (It stopped at 128: a longer outage then looked, in the log, like one that
            # had ended.)
            if self.failures and self.failures & (self.failures - 1) == 0:
                log.warning(
                    "node %s: scheduled %s failed %d time(s), next try in %.0fs: %s",
                    self.config.instance_id,
                    self.operation,
                    self.failures,
                    delay,
                    error,
                )
            self._save_state(delay, error)
            self._wait(delay, schedule)

    def _stopped(self) -> None:
        """Record a run that ended because serve stopped (its connections to the parent cut,
        see :meth:`stop`) as stopped, not as a failure to reach the parent: no backoff."""
        self._save_run(
            outcome="stopped",
            last_error="stopped while waiting for the parent (fhirsync serve stopping)",
        )

    def _save_state(self, delay: float, error: str | None) -> None:
        """Keep the backoff in the run state for ``fhirsync status`` and /health."""
        self._save_run(
            consecutive_failures=self.failures,
            backoff_seconds=delay if self.failures else None,
            next_run_at=datetime.now(UTC) + timedelta(seconds=delay),
            **({"last_error": error} if error else {}),
        )

    def _save_run(self, **fields: Any) -> None:
        """Save ``fields`` in this direction's run state; a warning if the database refuses."""
        try:
            with self.db.write() as conn:
                runs.save(conn, self.operation, **fields)
        except SQLAlchemyError as exc:
            # Another process held the database past busy_timeout (or the disk is full): the
            # state is saved after the next run. Raised here, it ended the thread, and the node
            # never synced again until restarted.
            log.warning(
                "node %s: scheduled %s: cannot save the run state: %s",
                self.config.instance_id,
                self.operation,
                str(getattr(exc, "orig", None) or exc).splitlines()[0],
            )

    def _wait(self, delay: float, schedule: int | None) -> None:
        """Wait ``delay`` seconds, or less if the direction is disabled meanwhile or its
        schedule is no longer ``schedule`` (a new schedule then starts with a run now)."""
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or not self.enabled or self._method(self.config).schedule != schedule:
                return
            self._stop.wait(min(left, CONFIG_CHECK_SECONDS))

    def _stopping(self, event: RunEvent) -> None:
        """The listener of a scheduled run: ends it after the page it just committed when serve
        is stopping or this direction was disabled. Without it, SIGTERM (or unticking pull on
        the admin page) waited for the whole run: a long pull was cut off by serve's stop
        timeout, or the init system's kill, anyway."""
        if isinstance(event, RunProgress) and (self._stop.is_set() or not self.enabled):
            raise RunStopped(f"scheduled {self.operation} asked to stop")

    def _run_once(self) -> tuple[str, str | None]:
        try:
            result = self._run_once_fn(self.config, self.db, self._stopping)
        except FhirsyncError as exc:  # configuration changed under us: keep serving, report it
            return "error", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the loop's thread must outlive any one run
            # A full disk or a database that stays locked: without this the thread would end,
            # and the node would stop syncing with nothing but a traceback on stderr.
            log.exception("node %s: scheduled %s crashed", self.config.instance_id, self.operation)
            return "error", f"{type(exc).__name__}: {exc}"
        self._log(result)
        return result.outcome, result.error

    def _log(self, result: RunFinished) -> None:
        """One line per run that did something, so the service log tells the node's history."""
        if result.outcome in ("unreachable", "configuration", "busy"):
            return  # unreachable, refused: the backoff lines below; busy: a manual run is at work
        # A conflict waits for a person, as a parked failure does.
        level = logging.WARNING if result.failures or result.conflicts else logging.INFO
        kept = (
            f", {result.conflicts} kept as conflicts (fhirsync conflicts lists them)"
            if result.conflicts
            else ""
        )
        if result.events_read or result.failures:
            log.log(
                level,
                "node %s: scheduled %s %s: %d events read, %d records %s, %d failed%s in %.1fs%s",
                self.config.instance_id,
                self.operation,
                result.outcome,
                result.events_read,
                result.applied,
                "applied" if self.operation == pull_context.OPERATION else "sent",
                result.failures,
                kept,
                result.seconds,
                " (fhirsync status lists them)" if result.failures else "",
            )


def pull_scheduler(config: NodeConfig, db: Database) -> Scheduler:
    """The scheduler of pull (``pull.enabled``, ``pull.schedule``); a run stops at its next
    page when asked."""

    def run(c: NodeConfig, d: Database, listener: Listener) -> RunFinished:
        return run_pull(c, d, listener=listener)

    return Scheduler(config, db, pull_context.OPERATION, lambda c: c.sync2.pull, run)


def push_scheduler(config: NodeConfig, db: Database) -> Scheduler:
    """The scheduler of push (``push.enabled``, ``push.schedule``). A push run is not stopped
    between batches: it ends by itself, or its connections are cut (:meth:`Scheduler.stop`)."""

    def run(c: NodeConfig, d: Database, _listener: Listener) -> RunFinished:
        return run_push(c, d)

    return Scheduler(config, db, push.OPERATION, lambda c: c.sync2.push, run)


def lifespan(config: NodeConfig, db: Database) -> Lifespan:
    """An ASGI lifespan that runs the pull and push schedulers, audit retention, and the idle
    WAL checkpointer of a SQLite node, while the app serves."""

    @asynccontextmanager
    async def run(_app: Any) -> AsyncIterator[None]:
        for warning in [*unknown_preferences(config), *unused_settings(config)]:
            log.warning("node=%s %s", config.instance_id, warning)
        schedulers = [pull_scheduler(config, db), push_scheduler(config, db)]
        retention = AuditRetention(
            db, config.settings.audit_retention_days, config.sync2.general.local_instance_id or ""
        )
        background: list[Scheduler | IdleCheckpointer | AuditRetention] = [
            retention,  # first: its start-up pass is done before the node answers
            *schedulers,
            IdleCheckpointer(db),
        ]
        for task in background:
            task.start()
        try:
            yield
        finally:
            await asyncio.gather(*(asyncio.to_thread(t.stop) for t in background))

    return run
