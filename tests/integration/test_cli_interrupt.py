"""Ctrl-C (SIGINT) in the middle of `fhirsync pull` and `fhirsync import`, as a real process gets
it: the command says it was interrupted in one line (no traceback), keeps what it committed, and
the next run completes the work without applying anything twice."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from tests.conftest import NodeFactory
from tests.integration.pull_support import (
    cli,
    committed_records,
    event_actions,
    held,
    new_uuid,
    patient,
    write_raw,
)

from fhirsync.testing.proxy import FaultProxy
from fhirsync.testing.servers import NodeHandle


def _records_so_far(node: NodeHandle) -> Callable[[], int]:
    """A count of the node's committed records, read straight from its SQLite file: it is polled
    every 10 ms while the command runs, so it must cost next to nothing (opening the node each
    time took long enough, on a busy machine, for the whole command to finish between looks)."""
    config, db = node.open()
    db.dispose()
    path = config.db_url.removeprefix("sqlite:///")

    def count() -> int:
        try:
            with closing(sqlite3.connect(path, timeout=5)) as conn:
                return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
        except sqlite3.Error:  # the command is creating its tables this instant
            return 0

    return count


def _interrupt_when(started: Callable[[], bool], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``fhirsync ARGS``; send SIGINT (Ctrl-C) once ``started()``; its result."""
    # A suite started in the background by a shell without job control (`make test &`, some CI
    # runners) ignores SIGINT, and so would the command, inheriting that: it then ran to the end
    # and the test failed. A handled SIGINT is reset to the default by exec, as at a terminal.
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "fhirsync", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    deadline = time.monotonic() + 60
    while not started() and process.poll() is None:
        assert time.monotonic() < deadline, "the command never started its work"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def _said_interrupted(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 130, "the command finished before the interrupt"
    assert "Traceback" not in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "interrupted: what was committed is kept; run the command again to continue"
    ], result.stderr


def test_ctrl_c_during_pull_then_pull_again(node_factory: NodeFactory) -> None:
    total = 4000
    parent = node_factory("parent", extra_settings={"feed_page_size": 50})
    uuids = [new_uuid() for _ in range(total)]
    for start in range(0, total, 1000):
        chunk = uuids[start : start + 1000]
        write_raw(parent, "patient", [patient(u, f"I{n}") for n, u in enumerate(chunk)], "parent")
    with FaultProxy("127.0.0.1", parent.port) as proxy:
        # Every answer a little late: the pull lasts seconds however fast the machine is, so
        # the interrupt lands in the middle of it.
        proxy.delay(0.01)
        slow_parent = NodeHandle(parent.node_dir, "parent", proxy.port, parent.admin_password)
        child = node_factory("child", parent=slow_parent, start=False)
        so_far = _records_so_far(child)
        stopped = _interrupt_when(lambda: so_far() >= 200, "pull", str(child.node_dir))
        _said_interrupted(stopped)
        assert 200 <= committed_records(child) < total

        proxy.heal()
        again = cli("pull", str(child.node_dir))
    assert again.returncode == 0, again.stdout + again.stderr
    assert held(child) == held(parent)
    assert all(actions == ["CREATED"] for actions in event_actions(child).values())


def test_ctrl_c_during_import_then_import_again(node_factory: NodeFactory, tmp_path: Path) -> None:
    total = 40_000
    node = node_factory("importer", start=False)
    data = tmp_path / "big.ndjson"
    data.write_text("".join(json.dumps(patient(new_uuid(), f"B{n}")) + "\n" for n in range(total)))
    args = ("import", str(node.node_dir), str(data), "--workers", "1", "--batch-size", "200")

    so_far = _records_so_far(node)
    stopped = _interrupt_when(lambda: so_far() >= 200, *args)
    _said_interrupted(stopped)
    kept = committed_records(node)
    assert 200 <= kept < total

    again = cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"imported {total - kept} records ({kept} unchanged), 0 lines failed" in again.stdout
    assert committed_records(node) == total
