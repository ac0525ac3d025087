"""The WAL settings of SQLite nodes, and the idle checkpointer of a server (real SQLite files)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fhirsync.records import RecordWrite
from fhirsync.store import records
from fhirsync.store.checkpoints import IdleCheckpointer
from fhirsync.store.engine import (
    WAL_AUTOCHECKPOINT_PAGES,
    WAL_SIZE_LIMIT_BYTES,
    Database,
    open_database,
)


def _patient(n: int) -> RecordWrite:
    body = {"resourceType": "Patient", "id": f"p-{n}", "name": [{"family": "Doe" * 50}]}
    return RecordWrite("patient", f"p-{n}", body, "node-a")


def _write(db: Database, start: int, count: int = 20) -> None:
    with db.write() as conn:
        records.write_many(conn, [_patient(n) for n in range(start, start + count)])


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'node.db'}")


def test_every_connection_gets_the_wal_settings(sqlite_db: Database) -> None:
    raw = sqlite_db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == (
            WAL_AUTOCHECKPOINT_PAGES
        )
        assert cursor.execute("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT_BYTES
    finally:
        raw.close()
    sqlite_db.dispose()


def test_an_idle_database_is_checkpointed_once_and_a_busy_one_is_left_alone(
    sqlite_db: Database,
) -> None:
    checkpointer = IdleCheckpointer(sqlite_db, idle=0.4, poll=0.05)
    checkpointer.start()
    try:
        # What the migrations left in the WAL is copied once it has been idle long enough.
        assert _wait_for(lambda: len(checkpointer.done) == 1)
        time.sleep(0.6)
        assert len(checkpointer.done) == 1  # no new commit, no new checkpoint
        # Commits closer together than ``idle``: no checkpoint while they go on.
        busy_until = time.monotonic() + 1.0
        n = 0
        while time.monotonic() < busy_until:
            _write(sqlite_db, n)
            n += 20
            time.sleep(0.1)
        assert len(checkpointer.done) == 1
        assert _wait_for(lambda: len(checkpointer.done) == 2)
        done = checkpointer.done[1]
        assert done.busy == 0
        assert done.wal_pages > 0
        assert done.copied_pages == done.wal_pages  # everything in the WAL is in the database
    finally:
        checkpointer.stop()
    assert not any(t.name == "wal-checkpoint" for t in threading.enumerate())
    with sqlite_db.read() as conn:
        assert len(records.get_many(conn, ["patient"], [f"p-{i}" for i in range(n)])) == n
    sqlite_db.dispose()


def test_a_checkpoint_does_not_wait_for_a_long_reader(sqlite_db: Database) -> None:
    _write(sqlite_db, 0)
    checkpointer = IdleCheckpointer(sqlite_db, idle=0.1, poll=0.05)
    with sqlite_db.read() as conn:
        # A reader holds its snapshot while more is written and the checkpointer runs.
        records.get_many(conn, ["patient"], ["p-0"])
        _write(sqlite_db, 100)
        checkpointer.start()
        try:
            assert _wait_for(lambda: len(checkpointer.done) == 1, timeout=5)
        finally:
            checkpointer.stop()
    # PASSIVE: it returned at once, copying only what the reader's snapshot allowed.
    done = checkpointer.done[0]
    assert done.busy == 0 and done.copied_pages < done.wal_pages
    sqlite_db.dispose()


def test_commits_by_another_process_count_too(sqlite_db: Database, tmp_path: Path) -> None:
    checkpointer = IdleCheckpointer(sqlite_db, idle=0.3, poll=0.05)
    checkpointer.start()
    # A second engine on the same file stands for a ``fhirsync pull`` beside ``serve``: the
    # checkpointer's engine makes none of its commits.
    other = open_database(f"sqlite:///{tmp_path / 'node.db'}")
    try:
        assert _wait_for(lambda: len(checkpointer.done) == 1)  # the migrations' WAL
        _write(other, 0)
        assert _wait_for(lambda: len(checkpointer.done) == 2)
        assert checkpointer.done[1].copied_pages == checkpointer.done[1].wal_pages > 0
    finally:
        checkpointer.stop()
        other.dispose()
    sqlite_db.dispose()


@pytest.mark.postgres
def test_postgresql_is_left_to_its_own_log(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL run checks this (FHIRSYNC_TEST_DB=postgresql)")
    db = open_database(db_url)
    checkpointer = IdleCheckpointer(db, idle=0.01, poll=0.01)
    checkpointer.start()
    _write(db, 0)
    time.sleep(0.2)
    checkpointer.stop()
    assert checkpointer.done == []
    assert not any(t.name == "wal-checkpoint" for t in threading.enumerate())
    db.dispose()


class _ClockSetBack:
    """The ``time`` module as seen after the system clock was set back an hour (NTP correcting
    a server's clock): wall-clock time behind the WAL file's modification time."""

    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def time() -> float:
        return time.time() - 3600


def test_idle_checkpoints_go_on_when_the_clock_is_set_back(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fhirsync.store.checkpoints.time", _ClockSetBack)
    _write(sqlite_db, 0)
    checkpointer = IdleCheckpointer(sqlite_db, idle=0.2, poll=0.05)
    checkpointer.start()
    try:
        assert _wait_for(lambda: len(checkpointer.done) == 1), "no checkpoint for an hour"
    finally:
        checkpointer.stop()
    assert checkpointer.done[0].copied_pages == checkpointer.done[0].wal_pages > 0
    sqlite_db.dispose()
