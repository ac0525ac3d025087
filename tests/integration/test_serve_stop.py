"""`fhirsync serve` stops within seconds on SIGTERM, even while its runs wait on a parent that
accepted the connection and never answers; the runs are recorded as stopped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import NodeFactory
from tests.integration.pull_support import (
    edit_sync2,
    event_actions,
    held,
    new_uuid,
    patient,
    save_sync2,
    write_raw,
)

from fhirsync.store import locks, runs
from fhirsync.testing.stub_http import QuietHandler, serving


class _Hung(QuietHandler):
    """Reads the request, then never answers (until the test ends)."""

    seen: list[str] = []
    release = threading.Event()

    def do_GET(self) -> None:
        self.seen.append(f"GET {self.path}")
        self.release.wait(120)

    def do_POST(self) -> None:
        self.seen.append(f"POST {self.path}")
        self.release.wait(120)


@contextmanager
def _hung_parent() -> Iterator[str]:
    _Hung.seen = []
    _Hung.release = threading.Event()
    with serving(_Hung) as server:
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            _Hung.release.set()


def test_serve_stops_within_seconds_while_its_runs_wait_on_a_hung_parent(
    node_factory: NodeFactory,
) -> None:
    with _hung_parent() as url:
        child = node_factory(
            "child", start=False, extra_settings={"parent_user": "child", "parent_password": "pw"}
        )
        data = edit_sync2(child, parentFeedLocation=url)
        for direction in ("pull", "push"):
            data[direction].update(enabled=True, schedule=1)
        save_sync2(child, data)
        write_raw(child, "patient", [patient(mine := new_uuid(), "Local")], "child")
        child.start_process()
        deadline = time.monotonic() + 30
        # Both runs wait: the pull on a feed page, the push on its greeting.
        while not all(any(part in r for r in _Hung.seen) for part in ("/metadata", "/atomfeed/")):
            assert time.monotonic() < deadline, _Hung.seen
            time.sleep(0.05)
        began = time.monotonic()
        child.stop()  # SIGTERM; after 15 s a SIGKILL
        took = time.monotonic() - began
    assert took < 8, f"serve took {took:.1f}s to stop"
    _config, db = child.open()
    try:
        with db.read() as conn:
            states = {op: runs.get(conn, op) for op in ("pull", "push")}
        for op, state in states.items():
            assert state.outcome == "stopped", (op, state)
            assert state.finished_at is not None, (op, state)
            assert locks.holder(db, op) is None, op
    finally:
        db.dispose()
    # Nothing lost: the record is still there to send, and nothing was pulled.
    assert list(held(child)) == [("patient", mine)]
    assert event_actions(child) == {mine: ["CREATED"]}
