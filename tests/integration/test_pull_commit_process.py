"""A long pull commits its later pages in a separate process (``sync.commit_process``), against real
nodes on 127.0.0.1: same result as the thread, the process killed mid-run, the pull killed while the
process works, and a commit error inside the process.

After each, the child holds exactly the parent's records and applied each change exactly once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text
from tests.conftest import NodeFactory
from tests.integration.pull_support import (
    cli,
    event_actions,
    held,
    new_uuid,
    patient,
    record_count,
    write_raw,
)

from fhirsync.store.tables import audit, markers
from fhirsync.sync.runner import run_pull
from fhirsync.sync.status import RunEvent, RunProgress
from fhirsync.testing.network import count_rows
from fhirsync.testing.servers import NodeHandle

PAGE = 50
"""Feed page size of the parents here: many pages from few records."""
SETTINGS = {"pull_commit_process_after": 100}
"""The child asks for its commit process after two pages."""


def _parent(node_factory: NodeFactory, total: int) -> tuple[NodeHandle, list[str]]:
    parent = node_factory("parent", extra_settings={"feed_page_size": PAGE})
    uuids = [new_uuid() for _ in range(total)]
    for start in range(0, total, 1000):
        chunk = uuids[start : start + 1000]
        write_raw(parent, "patient", [patient(u, f"P{n}") for n, u in enumerate(chunk)], "parent")
    return parent, uuids


def _commit_processes() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name == "fhirsync-commit"]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _wait_until_idle(pid: int, timeout: float = 60.0) -> None:
    """Until the process has started and waits for work (its CPU time stops growing)."""
    deadline = time.monotonic() + timeout
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        ticks = _cpu_ticks(pid)
        if ticks != last:
            last, quiet_since = ticks, time.monotonic()
        elif time.monotonic() - quiet_since > 0.5:
            return
        time.sleep(0.05)
    raise AssertionError("the commit process never became idle")


class UseTheProcess:
    """A listener that holds the pull once, until its commit process waits for pages, so the
    pages after that go to it (spawning takes a moment; until then the thread commits)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.running: list[int] = []
        """Commit processes alive at each progress event."""

    def __call__(self, event: RunEvent) -> None:
        if not isinstance(event, RunProgress):
            return
        processes = _commit_processes()
        self.running.append(len(processes))
        if self.pid is None and processes:
            self.pid = processes[0].pid
            assert self.pid is not None
            _wait_until_idle(self.pid)


def _marker_entry(child: NodeHandle) -> str | None:
    _config, db = child.open()
    try:
        with db.read() as conn:
            return conn.execute(select(markers.c.last_entry_id)).scalar()
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_long_pull_commits_in_the_commit_process_with_the_same_result(
    node_factory: NodeFactory,
) -> None:
    parent, uuids = _parent(node_factory, 1500)
    child = node_factory("child", parent=parent, start=False, extra_settings=SETTINGS)
    watch = UseTheProcess()
    config, db = child.open()
    try:
        result = run_pull(config, db, listener=watch)
    finally:
        db.dispose()
    assert result.outcome == "ok", result.error
    assert result.applied == 1500
    assert watch.pid is not None, "the commit process was never started"
    assert watch.running[:2] == [0, 0], "the first pages commit on the thread"
    assert watch.running[-1] == 1
    assert count_rows(child, audit) == 1500, "one success audit row per record"
    assert _commit_processes() == [], "the run stops its commit process"
    assert held(child) == held(parent)
    assert event_actions(child) == {u: ["CREATED"] for u in uuids}


def test_the_commit_process_killed_stops_the_run_and_the_next_run_resumes(
    node_factory: NodeFactory,
) -> None:
    parent, uuids = _parent(node_factory, 1500)
    child = node_factory("child", parent=parent, start=False, extra_settings=SETTINGS)
    killed: list[int] = []
    use = UseTheProcess()

    def kill_once_in_use(event: RunEvent) -> None:
        use(event)
        # Killed once it has committed pages (the process is in use from the 4th page on).
        if killed or use.pid is None or not isinstance(event, RunProgress):
            return
        if event.applied >= 400:
            os.kill(use.pid, signal.SIGKILL)
            killed.append(use.pid)

    config, db = child.open()
    try:
        first = run_pull(config, db, listener=kill_once_in_use)
    finally:
        db.dispose()
    assert killed, "the commit process was never in use"
    assert first.outcome == "unreachable"
    assert "commit process" in (first.error or "")
    partial = record_count(child)
    assert 0 < partial < 1500
    assert partial % PAGE == 0, "pages are committed whole"
    second = cli("pull", str(child.node_dir))
    assert second.returncode == 0, second.stdout + second.stderr
    assert held(child) == held(parent)
    assert event_actions(child) == {u: ["CREATED"] for u in uuids}


def _children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    # A zombie (exited, not yet reaped by init) counts as gone.
    return status.exists() and "\nState:\tZ" not in status.read_text()


def test_the_pull_killed_while_the_commit_process_works(node_factory: NodeFactory) -> None:
    parent, uuids = _parent(node_factory, 6000)
    child = node_factory("child", parent=parent, start=False, extra_settings=SETTINGS)
    log = (child.node_dir / "pull.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fhirsync", "pull", str(child.node_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    helpers: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while process.poll() is None:
            assert time.monotonic() < deadline, "the commit process never took a page"
            helpers = _children_of(process.pid)
            if helpers and record_count(child) >= 2000:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
        log.close()
    assert process.returncode == -signal.SIGKILL, "the run finished before the kill"
    assert helpers, "no commit process ran"
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in helpers):
        assert time.monotonic() < deadline, "the commit process outlived its pull"
        time.sleep(0.05)
    partial = record_count(child)
    assert 0 < partial < 6000
    assert partial % PAGE == 0, "pages are committed whole"
    rerun = cli("pull", str(child.node_dir), "--wait", "5")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert held(child) == held(parent)
    assert event_actions(child) == {u: ["CREATED"] for u in uuids}


def test_a_commit_error_in_the_process_reaches_the_run_and_keeps_the_marker(
    node_factory: NodeFactory,
) -> None:
    parent, uuids = _parent(node_factory, 1000)
    child = node_factory("child", parent=parent, start=False, extra_settings=SETTINGS)
    config, db = child.open()
    poison = uuids[700]  # in page 15, which the commit process commits
    try:
        with db.write() as conn:
            # A real database error inside the commit process's transaction.
            conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON records "
                    f"WHEN NEW.uuid = '{poison}' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
                )
            )
        use = UseTheProcess()
        with pytest.raises(Exception, match="poisoned row"):
            run_pull(config, db, listener=use)
        assert use.pid is not None
        assert record_count(child) == 700, "every page before the failing one, and no more"
        assert _marker_entry(child) is not None
        with db.write() as conn:
            conn.execute(text("DROP TRIGGER poison"))
        again = run_pull(config, db)
    finally:
        db.dispose()
    assert again.outcome == "ok", again.error
    assert held(child) == held(parent)
    assert event_actions(child) == {u: ["CREATED"] for u in uuids}
