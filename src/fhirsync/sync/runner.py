"""One pull run of a node, read top to bottom like the algorithm (STYLE principle 1).

lock → validate → for each enabled class in order: pull its category → report. A connection error
stops the run (markers stay); a broken feed stops only its category; record failures are counted.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from fhirsync.clients.facade import ClientFacade
from fhirsync.errors import (
    AuthError,
    ConfigurationError,
    FeedNotFound,
    RequestError,
    RunStopped,
    TransientError,
)
from fhirsync.feed.reader import FeedReader
from fhirsync.runtime import bulk_settings
from fhirsync.settings import NodeConfig
from fhirsync.store import audit_query, locks, runs
from fhirsync.store.engine import Database
from fhirsync.sync.checking import BodyChecker
from fhirsync.sync.pull import build_context, connect_parent, pull_category
from fhirsync.sync.pull_context import OPERATION, Totals
from fhirsync.sync.status import (
    CategoryStopped,
    Listener,
    Outcome,
    RunFinished,
    RunStarted,
    ignore,
    on_progress,
)

log = logging.getLogger(__name__)
LOCK_TTL = 120.0


def run_pull(
    config: NodeConfig,
    db: Database,
    *,
    listener: Listener = ignore,
    wait: float = 0.0,
    include_own: bool = False,
) -> RunFinished:
    """Pull every enabled category once; ConfigurationError if the node cannot sync at all.

    ``include_own`` also applies changes that began on this node: a recovery run after the node
    was restored from a backup. A copy made by ``fhirsync backup`` asks for one by itself
    (:data:`~fhirsync.settings.RECOVERY_FILE`), until a run has read every category.
    """
    _validate(config)
    owner = locks.new_owner()
    if not _acquire(db, owner, wait):
        return RunFinished(OPERATION, "busy", 0, 0, 0, 0.0, "another pull run is in progress")
    with bulk_settings():
        return _run(config, db, listener, owner, include_own)


def _run(
    config: NodeConfig, db: Database, listener: Listener, owner: str, include_own: bool
) -> RunFinished:
    started = time.monotonic()
    totals, error = Totals(), None
    stopped: list[str] = []
    missing = 0  # categories whose feed the parent does not have (404)
    outcome: Outcome = "ok"
    connected: tuple[FeedReader, ClientFacade] | None = None
    checker: BodyChecker | None = None
    recovery = config.recovery_file
    # Extends the run lock every LOCK_TTL/4 seconds of progress (pages and categories): one large
    # category can outlast LOCK_TTL. Not after every category: an idle run of ~25 categories then
    # wrote 25 times, and on a short schedule the WAL was never idle long enough to checkpoint.
    keep = locks.keeper(db, "pull", owner, LOCK_TTL)
    include_own = include_own or recovery.exists()
    audit_mark: int | None = None
    try:
        # Inside the try: a client that cannot be made (parent_ca_file names no file, a plug-in
        # refuses the settings) left the run lock held, and `serve` skipped its runs until the
        # lock expired. No I/O yet: errors come from reading.
        connected = feed, transport = connect_parent(config)
        audit_mark = _audit_mark(db)
        _save(db, started_at=datetime.now(UTC), outcome="running")
        classes = [c for c in config.sync2.pull.classes if c.enabled]
        listener(RunStarted(OPERATION, tuple(c.category.lower() for c in classes)))
        ctx = build_context(
            config, db, feed, transport, on_progress(listener, keep), include_own=include_own
        )
        checker = ctx.checker
        for cls in classes:
            try:
                # The run's totals are passed in, so pages committed before a lost connection
                # still count in the run's figures.
                pull_category(ctx, cls.category.lower(), cls.preferred_client, totals)
            except RequestError as exc:  # a broken feed blocks only its own category
                listener(CategoryStopped(OPERATION, cls.category, type(exc).__name__, str(exc)))
                stopped.append(f"{cls.category.lower()}: {type(exc).__name__}: {exc}")
                if isinstance(exc, FeedNotFound):
                    missing += 1
                totals.failed += 1
                continue
            keep()
        outcome, error = _read_outcome(config, totals, stopped, missing=missing, of=len(classes))
        if not stopped and recovery.exists():
            recovery.unlink()
            log.info("node %s: recovery pull after a restore done", config.instance_id)
    except TransientError as exc:
        outcome, error = "unreachable", f"{type(exc).__name__}: {exc}"
    except AuthError as exc:  # the parent answers: its account for this node is the problem
        outcome, error = "configuration", f"{type(exc).__name__}: {exc}"
    except RunStopped:
        outcome, error = "stopped", None  # the pages read so far are committed, with markers
    finally:
        if checker is not None:
            checker.close()
        if connected is not None:
            connected[1].close()
            connected[0].close()
        locks.release(db, "pull", owner)
    result = _finished(db, outcome, totals, time.monotonic() - started, error, audit_mark)
    listener(result)
    return result


def _finished(
    db: Database,
    outcome: Outcome,
    totals: Totals,
    seconds: float,
    error: str | None,
    audit_mark: int | None,
) -> RunFinished:
    """The run's result, kept as the pull's run state."""
    # The reconciler decides in the page's commit, after the page counted its writes as applied:
    # a change kept as a conflict is counted apart, from the audit rows the run left.
    conflicts = _conflicts_since(db, audit_mark)
    applied = max(0, totals.applied - conflicts)
    _save(
        db,
        finished_at=datetime.now(UTC),
        outcome=outcome,
        events_read=totals.read,
        applied=applied,
        failed=totals.failed,
        last_error=error,
    )
    return RunFinished(
        OPERATION, outcome, totals.read, applied, totals.failed, seconds, error, conflicts
    )


def _read_outcome(
    config: NodeConfig, totals: Totals, stopped: list[str], *, missing: int, of: int
) -> tuple[Outcome, str | None]:
    """The outcome of a run that read every category (``missing`` of ``of`` feeds were 404)."""
    if of and missing == of:
        # No feed anywhere: a wrong parentFeedLocation (an /openmrs suffix, say), not a parent
        # without some categories. The scheduler backs off as for an unreachable one.
        return "unreachable", (
            f"{config.parent_url} publishes none of the {missing} feeds (each answered 404): "
            "check general.parentFeedLocation"
        )
    # A stopped category is kept as the run's error, so `fhirsync status` shows it.
    return ("failures" if totals.failed else "ok"), "; ".join(stopped) or None


def _validate(config: NodeConfig) -> None:
    """Spec §2.4: an instance id and a parent are required."""
    if not config.instance_id or config.parent_url is None:
        raise ConfigurationError(
            "parentFeedLocation is not set", field="general.parentFeedLocation", source="sync2.json"
        )


def _audit_mark(db: Database) -> int:
    """The newest audit row before the run reads anything (its own rows come after)."""
    with db.read() as conn:
        return audit_query.last_id(conn)


def _conflicts_since(db: Database, audit_mark: int | None) -> int:
    """Conflicts the run kept (0 when it stopped before it began reading)."""
    if audit_mark is None:
        return 0
    with db.read() as conn:
        return audit_query.conflicts_since(conn, audit_mark, OPERATION)


def _acquire(db: Database, owner: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while not locks.acquire(db, "pull", owner, LOCK_TTL):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True


def _save(db: Database, **values: Any) -> None:
    with db.write() as conn:
        runs.save(conn, OPERATION, **values)
