"""Runner guards (configuration, the run lock) and the scheduler's backoff."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from fhirsync.errors import ConfigurationError, RunStopped
from fhirsync.node import init_node, open_node
from fhirsync.settings import NodeConfig, SyncMethodConfig
from fhirsync.store import locks, runs
from fhirsync.store.engine import Database
from fhirsync.sync.retry import RetryPolicy
from fhirsync.sync.runner import run_pull
from fhirsync.sync.scheduler import Scheduler, pull_scheduler
from fhirsync.sync.status import Listener, RunFinished, RunProgress


@pytest.fixture
def child(tmp_path: Path) -> NodeConfig:
    result = init_node(
        tmp_path / "child",
        instance_id="child",
        parent="http://127.0.0.1:9",
        admin_password="x" * 12,
    )
    return result.config


def quick_scheduler(
    config: NodeConfig,
    db: Database,
    run_once: Callable[[NodeConfig, Database, Listener], RunFinished],
    *,
    delay: float,
) -> Scheduler:
    """A pull scheduler, enabled hourly, that runs ``run_once`` and backs off ``delay`` seconds."""
    method = SyncMethodConfig(enabled=True, schedule=3600)
    scheduler = Scheduler(config, db, "pull", lambda _c: method, run_once)
    scheduler.policy = RetryPolicy(base_delay=delay, factor=1, max_delay=delay, jitter=0)
    return scheduler


def test_missing_parent_is_a_configuration_error(tmp_path: Path) -> None:
    init_node(tmp_path / "lonely", instance_id="lonely", admin_password="x" * 12)
    config, db = open_node(tmp_path / "lonely")
    with pytest.raises(ConfigurationError, match="parentFeedLocation"):
        run_pull(config, db)
    db.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "fhirsync", "pull", str(tmp_path / "lonely")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "parentFeedLocation" in done.stderr


def test_a_run_that_cannot_reach_for_its_parent_frees_the_lock(child: NodeConfig) -> None:
    # parent_ca_file names no file: refused when the run makes its clients, after it took the
    # lock. The lock stayed held: `serve` (the same live process) skipped its scheduled pulls
    # and refused "Pull now" as busy for LOCK_TTL, after the file was put in place.
    config = child.model_copy(
        update={"settings": child.settings.model_copy(update={"parent_ca_file": "gone.pem"})}
    )
    _, db = open_node(child.node_dir)
    try:
        with pytest.raises(ConfigurationError, match="parent_ca_file"):
            run_pull(config, db)
        assert locks.holder(db, "pull") is None
        with db.read() as conn:
            assert runs.get(conn, "pull").outcome != "running"
    finally:
        db.dispose()


def test_a_second_run_is_refused_while_one_holds_the_lock(child: NodeConfig) -> None:
    _, db = open_node(child.node_dir)
    owner = locks.new_owner()
    assert locks.acquire(db, "pull", owner, 60)
    result = run_pull(child, db, wait=0.6)
    assert (result.outcome, result.applied) == ("busy", 0)
    locks.release(db, "pull", owner)
    db.dispose()


def test_scheduler_backs_off_and_resets(child: NodeConfig) -> None:
    _, db = open_node(child.node_dir)
    scheduler = pull_scheduler(child, db)
    scheduler.policy = RetryPolicy(base_delay=1, factor=2, max_delay=100, jitter=0)
    assert [scheduler.next_delay("unreachable") for _ in range(3)] == [1, 2, 4]
    assert scheduler.failures == 3
    assert scheduler.next_delay("ok") == child.sync2.pull.schedule
    assert scheduler.failures == 0
    assert not scheduler.enabled  # pull.enabled is false by default: serve does not pull
    scheduler.start()
    scheduler.stop()
    db.dispose()


def test_a_crashed_scheduled_run_is_logged_and_the_schedule_goes_on(
    child: NodeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    _, db = open_node(child.node_dir)
    calls: list[int] = []
    ran_again = threading.Event()

    def run_once(config: NodeConfig, database: Database, listener: Listener) -> RunFinished:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk I/O error")  # not a FhirsyncError: e.g. a full disk
        ran_again.set()
        return RunFinished("pull", "failures", 3, 2, 1, 0.5, None)

    scheduler = quick_scheduler(child, db, run_once, delay=0.01)
    caplog.set_level(logging.INFO, logger="fhirsync.sync.scheduler")
    scheduler.start()
    try:
        assert ran_again.wait(10), "the scheduler thread died with the crashed run"
    finally:
        scheduler.stop()
    with db.read() as conn:
        state = runs.get(conn, "pull")
    db.dispose()
    crashed = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert crashed and crashed[0].exc_info is not None  # the traceback is in the log
    assert state.consecutive_failures == 0  # the second run reached the parent
    summary = [
        r for r in caplog.records if "3 events read, 2 records applied, 1 failed" in r.getMessage()
    ]
    assert summary and summary[0].levelno == logging.WARNING


def test_enabling_and_disabling_on_a_running_node_takes_effect_without_a_restart(
    child: NodeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fhirsync.sync.scheduler.CONFIG_CHECK_SECONDS", 0.05)
    _, db = open_node(child.node_dir)
    runs_seen: list[float] = []
    ran = threading.Event()

    def run_once(config: NodeConfig, database: Database, listener: Listener) -> RunFinished:
        runs_seen.append(time.monotonic())
        ran.set()
        return RunFinished("pull", "ok", 0, 0, 0, 0.0, None)

    def pull_section(config: NodeConfig) -> SyncMethodConfig:
        return config.sync2.pull

    scheduler = Scheduler(child, db, "pull", pull_section, run_once)
    assert not scheduler.enabled
    scheduler.start()
    try:
        assert not ran.wait(0.5)  # disabled: the loop idles
        # What the admin page's save does: the shared configuration object gets a new sync2.
        enabled = child.sync2.pull.model_copy(update={"enabled": True, "schedule": 3600})
        child.sync2 = child.sync2.model_copy(update={"pull": enabled})
        assert ran.wait(10), "enabling pull did not start scheduled runs"
        # A shorter schedule applies at once, not after the hour already being waited.
        ran.clear()
        faster = child.sync2.pull.model_copy(update={"schedule": 1})
        child.sync2 = child.sync2.model_copy(update={"pull": faster})
        assert ran.wait(10), "the new schedule was not taken up"
        disabled = child.sync2.pull.model_copy(update={"enabled": False})
        child.sync2 = child.sync2.model_copy(update={"pull": disabled})
        time.sleep(0.3)
        count = len(runs_seen)
        time.sleep(2.0)  # two more schedule periods: nothing runs while disabled
        assert len(runs_seen) == count
    finally:
        scheduler.stop()
        db.dispose()


def test_a_database_locked_past_busy_timeout_does_not_end_the_schedule(
    child: NodeConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Saving the run state after a run can fail too (another process held the database for
    longer than busy_timeout): the loop logs it and runs again, it does not die silently."""
    _, db = open_node(child.node_dir)
    real_save = runs.save
    saves: list[int] = []

    def locked_once(conn: object, operation: str, **values: object) -> None:
        saves.append(1)
        if len(saves) == 1:
            raise OperationalError("UPDATE sync_runs", {}, sqlite3.OperationalError("locked"))
        real_save(conn, operation, **values)  # type: ignore[arg-type]

    monkeypatch.setattr("fhirsync.sync.scheduler.runs.save", locked_once)
    calls: list[int] = []
    ran_again = threading.Event()

    def run_once(config: NodeConfig, database: Database, listener: Listener) -> RunFinished:
        calls.append(1)
        if len(calls) > 1:
            ran_again.set()
        return RunFinished("pull", "unreachable", 0, 0, 0, 0.0, "ConnectionFailed: refused")

    scheduler = quick_scheduler(child, db, run_once, delay=0.01)
    caplog.set_level(logging.INFO, logger="fhirsync.sync.scheduler")
    scheduler.start()
    try:
        assert ran_again.wait(10), "the scheduler thread died when the database was locked"
    finally:
        scheduler.stop()
        db.dispose()
    saved = [r for r in caplog.records if "cannot save the run state: locked" in r.getMessage()]
    assert saved and saved[0].levelno == logging.WARNING


def test_stopping_the_scheduler_ends_a_long_run_at_its_next_page(child: NodeConfig) -> None:
    _, db = open_node(child.node_dir)
    pages: list[int] = []
    running, ended = threading.Event(), threading.Event()

    def endless_run(config: NodeConfig, database: Database, listener: Listener) -> RunFinished:
        try:
            for page in range(100_000):  # a feed far longer than serve is given to stop
                pages.append(page)
                listener(RunProgress("pull", "patient", page, None))
                running.set()
                time.sleep(0.01)
        except RunStopped:
            return RunFinished("pull", "stopped", len(pages), 0, 0, 0.0, None)
        finally:
            ended.set()
        return RunFinished("pull", "ok", len(pages), 0, 0, 0.0, None)

    method = SyncMethodConfig(enabled=True, schedule=3600)
    scheduler = Scheduler(child, db, "pull", lambda _c: method, endless_run)
    scheduler.start()
    try:
        assert running.wait(10)
        scheduler.stop(timeout=10)
        assert ended.wait(10), "the run went on after serve was asked to stop"
    finally:
        db.dispose()
    assert len(pages) < 100_000


def test_disabling_pull_ends_a_long_run_at_its_next_page(child: NodeConfig) -> None:
    _, db = open_node(child.node_dir)
    running, ended = threading.Event(), threading.Event()
    outcomes: list[str] = []
    method = SyncMethodConfig(enabled=True, schedule=3600)

    def endless_run(config: NodeConfig, database: Database, listener: Listener) -> RunFinished:
        try:
            for page in range(100_000):
                listener(RunProgress("pull", "patient", page, None))
                running.set()
                time.sleep(0.01)
        except RunStopped:
            outcomes.append("stopped")
        finally:
            ended.set()
        return RunFinished("pull", "stopped", 0, 0, 0, 0.0, None)

    scheduler = Scheduler(child, db, "pull", lambda _c: method, endless_run)
    scheduler.start()
    try:
        assert running.wait(10)
        method.enabled = False  # what saving the admin page's Configuration does, in effect
        assert ended.wait(10), "the run went on after pull was disabled"
    finally:
        scheduler.stop()
        db.dispose()
    assert outcomes == ["stopped"]


def test_a_long_outage_keeps_being_logged_sparsely_and_its_end_is_logged(
    child: NodeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    _, db = open_node(child.node_dir)
    outcomes = ["unreachable"] * 300 + ["ok"]
    done = threading.Event()

    def run_once(config: NodeConfig, database: Database, listener: Listener) -> RunFinished:
        outcome = outcomes.pop(0) if outcomes else "ok"
        if not outcomes:
            done.set()
        error = "ConnectionFailed: refused" if outcome == "unreachable" else None
        return RunFinished("pull", outcome, 0, 0, 0, 0.0, error)  # type: ignore[arg-type]

    scheduler = quick_scheduler(child, db, run_once, delay=0.0001)
    caplog.set_level(logging.INFO, logger="fhirsync.sync.scheduler")
    scheduler.start()
    try:
        assert done.wait(60)
    finally:
        scheduler.stop()
        db.dispose()
    lines = [r.getMessage() for r in caplog.records]
    failed = [line for line in lines if "scheduled pull failed" in line]
    # 1, 2, 4, ... 256: an outage of any length is still in the log, in a few lines.
    assert [int(line.split(" failed ")[1].split()[0]) for line in failed] == [
        2**n for n in range(9)
    ]
    assert lines[-1].startswith("node child: scheduled pull works again")
    assert "after 300 failed runs" in lines[-1]


def test_the_backoff_survives_an_outage_of_thousands_of_runs(child: NodeConfig) -> None:
    # With a short schedule (pull every 10 s) a parent down for three hours is 1000+ failed runs;
    # the 1025th raised OverflowError out of the loop and ended the scheduler's thread.
    _, db = open_node(child.node_dir)
    scheduler = pull_scheduler(child, db)  # the node's own policy: retry_* of fhirsync.json
    delays = [scheduler.next_delay("unreachable") for _ in range(1100)]
    db.dispose()
    assert scheduler.failures == 1100
    cap = min(float(child.sync2.pull.schedule or 300), child.settings.retry_max_delay)
    assert cap * 0.9 <= delays[-1] <= cap


def test_a_scheduled_run_that_kept_conflicts_says_so(
    child: NodeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    # Its line said "1 records applied, 0 failed": the log never told that a person must decide.
    _, db = open_node(child.node_dir)
    ran = threading.Event()

    def run_once(config: NodeConfig, database: Database, listener: Listener) -> RunFinished:
        ran.set()
        return RunFinished("pull", "ok", 3, 1, 0, 0.5, None, conflicts=2)

    scheduler = quick_scheduler(child, db, run_once, delay=0.01)
    caplog.set_level(logging.INFO, logger="fhirsync.sync.scheduler")
    scheduler.start()
    try:
        assert ran.wait(10)
    finally:
        scheduler.stop()
    db.dispose()
    said = [r for r in caplog.records if "1 records applied, 0 failed" in r.getMessage()]
    assert said and said[0].levelno == logging.WARNING
    assert "2 kept as conflicts (fhirsync conflicts lists them)" in said[0].getMessage()
