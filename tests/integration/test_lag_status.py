"""Lag per category (parent feed and unpushed local changes), /health schedulers, /metrics lag and
``fhirsync status``, on a real parent and child."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from tests.conftest import NodeFactory
from tests.integration.api_support import admin_pages
from tests.integration.pull_support import (
    edit_sync2,
    new_uuid,
    patient,
    put,
    save_sync2,
    write_raw,
)
from typer.testing import CliRunner

from fhirsync.cli.main import build_app
from fhirsync.records import ENTRY_ID_PREFIX
from fhirsync.sync import lag, scheduler
from fhirsync.sync.push_run import run_push
from fhirsync.sync.runner import run_pull
from fhirsync.testing.javafeed import JavaEvent, JavaFeedServer
from fhirsync.testing.servers import NodeHandle


def _lag(node: NodeHandle) -> lag.Lag:
    lag.clear_cache()
    config, db = node.open()
    try:
        return lag.gather(config, db)
    finally:
        db.dispose()


def _row(found: lag.Lag, category: str) -> lag.CategoryLag:
    return next(r for r in found.categories if r.category == category)


def _sync(node: NodeHandle, operation: str) -> None:
    config, db = node.open()
    try:
        result = (run_pull if operation == "pull" else run_push)(config, db)
    finally:
        db.dispose()
    assert result.outcome == "ok", result


@pytest.mark.postgres
def test_lag_follows_pulls_and_pushes(node_factory: NodeFactory) -> None:
    parent = node_factory("parent")
    write_raw(parent, "patient", [patient(new_uuid(), f"P{n}") for n in range(3)], "parent")
    child = node_factory("child", parent=parent, start=False)

    before = _lag(child)
    assert before.parent_error is None and before.source == "feedstate"
    assert _row(before, "patient").behind_parent == 3
    assert _row(before, "location").behind_parent == 0
    assert _row(before, "patient").unpushed == 0

    _sync(child, "pull")
    assert _row(_lag(child), "patient").behind_parent == 0
    # Pulled records are not local changes: nothing to push.
    assert _row(_lag(child), "patient").unpushed == 0

    put(parent, patient(new_uuid(), "Later"))
    put(parent, patient(new_uuid(), "Later too"))
    assert _row(_lag(child), "patient").behind_parent == 2

    child.start()
    put(child, patient(new_uuid(), "Made here"))
    assert _row(_lag(child), "patient").unpushed == 1
    _sync(child, "push")
    assert _row(_lag(child), "patient").unpushed == 0


def test_lag_answers_fast_when_the_parent_is_down(node_factory: NodeFactory) -> None:
    parent = node_factory("parent")
    child = node_factory("child", parent=parent, start=False)
    parent.stop()
    started = time.monotonic()
    found = _lag(child)
    assert time.monotonic() - started < 5.0
    assert found.parent_error is not None and found.parent_error.startswith("unreachable")
    assert _row(found, "patient").unpushed == 0  # the local side is still known


def test_feedstate_endpoint(node_factory: NodeFactory) -> None:
    node = node_factory("parent")
    first = new_uuid()
    put(node, patient(first, "One"))
    put(node, patient(new_uuid(), "Two"))
    with node.client() as client:
        plain = client.get("/ws/rest/sync2/feedstate").json()
        assert plain["categories"]["patient"] == {"latest": 2, "behind": 2}
        assert plain["pageSize"] >= 1
        unknown = client.get(
            "/ws/rest/sync2/feedstate", params={"position": f"patient:{ENTRY_ID_PREFIX}nope"}
        ).json()
        assert unknown["categories"]["patient"] == {"latest": 2, "behind": None}
        # The entry id of the first event: one event follows it.
        page = client.get("/ws/atomfeed/patient/1").text
        entry = page.split("<id>")[2].split("</id>")[0]
        known = client.get(
            "/ws/rest/sync2/feedstate", params={"position": f"patient:{entry}"}
        ).json()
        assert known["categories"]["patient"] == {"latest": 2, "behind": 1}
    assert httpx.get(f"{node.base_url}/ws/rest/sync2/feedstate").status_code == 401


def test_health_metrics_and_status_show_schedulers_and_lag(node_factory: NodeFactory) -> None:
    parent = node_factory("parent")
    put(parent, patient(new_uuid(), "One"))
    child = node_factory("child", parent=parent)

    health = httpx.get(f"{child.base_url}/health").json()
    assert health["database"] == "ok" and health["status"] == "ok"
    pull = health["schedulers"]["pull"]
    assert pull["enabled"] is False and pull["running"] is False
    assert set(pull) >= {"backoffSeconds", "lastErrorClass", "lastOutcome", "nextRunAt"}
    assert "push" in health["schedulers"]

    lag.clear_cache()
    with child.client() as client:
        text = client.get("/metrics").text
    assert 'fhirsync_lag_parent_events{category="patient"} 1.0' in text
    assert 'fhirsync_lag_unpushed_events{category="patient"} 0.0' in text
    assert "fhirsync_parent_reachable 1.0" in text

    lag.clear_cache()
    result = CliRunner(env={"COLUMNS": "200"}).invoke(build_app(), ["status", str(child.node_dir)])
    assert result.exit_code == 0, result.output
    assert "behind parent" in result.stdout and "not yet pushed" in result.stdout
    patient_line = next(line for line in result.stdout.splitlines() if "│ patient " in line)
    assert patient_line.split("│")[2].strip() == "1", patient_line

    parent.stop()
    lag.clear_cache()
    down = CliRunner(env={"COLUMNS": "200"}).invoke(build_app(), ["status", str(child.node_dir)])
    assert down.exit_code == 3, down.output
    assert "parent lag unreachable" in down.stdout


def test_status_tells_refused_credentials_from_an_unreachable_parent(
    node_factory: NodeFactory,
) -> None:
    parent = node_factory("parent")
    child = node_factory(
        "child", parent=parent, parent_user="admin", parent_password="not-the-password"
    )
    lag.clear_cache()
    found = _lag(child)
    assert found.parent_label == lag.CREDENTIALS_REFUSED
    result = CliRunner(env={"COLUMNS": "250"}).invoke(build_app(), ["status", str(child.node_dir)])
    assert result.exit_code == 2, result.output
    assert "parent reachable: yes, but it refuses this node's credentials" in result.stdout
    patient_line = next(line for line in result.stdout.splitlines() if "│ patient " in line)
    assert patient_line.split("│")[2].strip() == "credentials refused", patient_line


def test_status_counts_pull_and_push_failures_and_lists_the_most_urgent(
    node_factory: NodeFactory,
) -> None:
    from datetime import UTC, datetime, timedelta

    from fhirsync.store import failures
    from fhirsync.store.failures import FailureNote

    node = node_factory("clinic", start=False)
    start = datetime(2026, 11, 1, tzinfo=UTC)

    def note(operation: str, n: int, status: failures.FailureStatus) -> FailureNote:
        return FailureNote(
            operation, "marker", "patient", f"{operation}-{n:03d}", f"tag:{n}", "UPDATED", {},
            "InvalidResource", f"reason {n}", status, 3,
        )  # fmt: skip

    _config, db = node.open()
    try:
        with db.write() as conn:
            for n in range(23):
                failures.record(conn, [note("pull", n, "parked")], now=start + timedelta(hours=n))
            failures.record(conn, [note("push", 0, "parked")], now=start)
            failures.record(conn, [note("push", 1, "retrying")], now=start)
    finally:
        db.dispose()
    result = CliRunner(env={"COLUMNS": "250"}).invoke(build_app(), ["status", str(node.node_dir)])
    assert result.exit_code == 1, result.output
    assert "failures: pull: 23 parked; push: 1 parked, 1 retrying" in result.stdout
    listed = [line.split()[1:4] for line in result.stdout.splitlines() if line.startswith("  #")]
    assert len(listed) == 20
    # Parked first, newest first: the newest pull failures, then the parked push one would follow.
    assert listed[0] == ["pull", "parked", "patient/pull-022"]
    assert listed[-1] == ["pull", "parked", "patient/pull-003"]
    assert "... and 5 more" in result.stdout and "audit" in result.stdout
    assert "last push: never" in result.stdout


def _status(node: NodeHandle) -> tuple[int, str]:
    lag.clear_cache()
    result = CliRunner(env={"COLUMNS": "250"}).invoke(build_app(), ["status", str(node.node_dir)])
    return result.exit_code, result.stdout


@pytest.mark.parametrize(
    ("login_redirect", "sync2_status"),
    [(False, 404), (True, 405), (True, 500)],
    ids=["health-404", "health-302-feedstate-405", "health-302-feedstate-500"],
)
def test_a_java_parent_without_health_is_reachable_through_its_feed(
    node_factory: NodeFactory, login_redirect: bool, sync2_status: int
) -> None:
    # OpenMRS has no /health (404, or a redirect to its login page): the check asks a feed
    # instead; nor fhirsync's feedstate, however it refuses it: lag reads the recent pages.
    child = node_factory("child", start=False)
    java_parent = JavaFeedServer(
        [JavaEvent("patient", new_uuid())], login_redirect=login_redirect, sync2_status=sync2_status
    )
    with java_parent.start() as java:
        edit_sync2(child, parentFeedLocation=java.base_url)
        config, _db = child.open()
        _db.dispose()
        assert lag.check_parent(config, timeout=5.0) == lag.ParentStatus(java.base_url, True)
        code, shown = _status(child)
        assert "parent reachable: yes" in shown, shown
        assert code == 0, shown
        patient_line = next(line for line in shown.splitlines() if "│ patient " in line)
        assert patient_line.split("│")[2].strip() == "1", patient_line


def test_a_wrong_parent_feed_location_is_named_and_exits_3(node_factory: NodeFactory) -> None:
    parent = node_factory("parent")
    child = node_factory("child", parent=parent, start=False)
    edit_sync2(child, parentFeedLocation=f"{parent.base_url}/openmrs")  # a Java context path
    config, db = child.open()
    db.dispose()
    found = lag.check_parent(config, timeout=5.0)
    assert found.reachable is False
    assert "check general.parentFeedLocation" in found.reason, found
    code, shown = _status(child)
    assert code == 3, shown
    assert "no sync feeds at" in shown and "parentFeedLocation" in shown
    parent.stop()
    code, shown = _status(child)
    assert code == 3 and "parent reachable: no (cannot reach" in shown, shown


def test_java_parent_lag_from_recent_pages(node_factory: NodeFactory) -> None:
    # OpenMRS has no feedstate: each category's recent page (5 entries a page) is read instead.
    uuids = [new_uuid() for _ in range(12)]
    child = node_factory("child", start=False)
    feed = [JavaEvent("patient", u) for u in uuids]
    with JavaFeedServer(feed, fhir=[patient(u, f"Java{n}") for n, u in enumerate(uuids)]) as java:
        edit_sync2(child, parentFeedLocation=java.base_url)
        _sync(child, "pull")
        found = _lag(child)
        assert found.source == "recent pages" and found.parent_error is None, found
        assert _row(found, "patient").parent_text == "0"  # the marker is on the last page
        assert _row(found, "location").parent_text == "0"  # an empty feed: nothing to pull
        java.add(*(JavaEvent("patient", new_uuid()) for _ in range(2)))
        assert _row(_lag(child), "patient").parent_text == "2"  # still on the last page: exact
        java.add(*(JavaEvent("patient", new_uuid()) for _ in range(8)))
        # The marker's page 3 is archived now: only the recent page 5 is counted, as a bound.
        assert _row(_lag(child), "patient").parent_text == "at least 2"


def test_health_names_only_the_error_class_of_a_failed_push_or_pull(
    node_factory: NodeFactory,
) -> None:
    # /health needs no login: it names the class of the last error, never its text (hosts,
    # record ids). A push saved its error without the class, so the text showed up there.
    parent = node_factory("parent")
    child = node_factory("child", parent=parent)
    put(child, patient(new_uuid(), "Local"))
    parent.stop()
    config, db = child.open()
    try:
        assert run_push(config, db).outcome == "unreachable"
        assert run_pull(config, db).outcome == "unreachable"
    finally:
        db.dispose()
    schedulers = httpx.get(f"{child.base_url}/health").json()["schedulers"]
    assert schedulers["push"]["lastErrorClass"] == "ConnectionFailed"
    assert schedulers["pull"]["lastErrorClass"] == "ConnectionFailed"


def test_health_calls_a_run_whose_process_was_killed_interrupted(
    node_factory: NodeFactory,
) -> None:
    from datetime import UTC, datetime

    from fhirsync.store import runs

    node = node_factory("clinic", start=False)
    _config, db = node.open()
    try:
        with db.write() as conn:  # what a run leaves behind when SIGKILL stops it: no lock held
            runs.save(conn, "pull", started_at=datetime.now(UTC), outcome="running")
    finally:
        db.dispose()
    node.start()
    pull = httpx.get(f"{node.base_url}/health").json()["schedulers"]["pull"]
    assert (pull["running"], pull["lastOutcome"]) == (False, "interrupted")


def _health_until(node: NodeHandle, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = httpx.get(f"{node.base_url}/health", timeout=10).json()
        if wanted(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_a_scheduler_kept_from_running_by_a_locked_database_is_overdue(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another program holding the database's write lock stops every scheduled run before it
    # starts, and the scheduler cannot save its next run time either. /health said "ok" all along
    # (an uptime monitor saw nothing) while the node synced nothing.
    monkeypatch.setattr(scheduler, "OVERDUE_AFTER", timedelta(seconds=1))
    parent = node_factory("parent")
    child = node_factory("child", parent=parent, start=False)
    data = edit_sync2(child)
    data["pull"].update(enabled=True, schedule=1)
    save_sync2(child, data)
    child.start()

    def ran(body: dict[str, Any]) -> bool:
        return bool(body["schedulers"]["pull"]["lastOutcome"] == "ok")

    healthy = _health_until(child, ran)
    assert healthy["status"] == "ok" and healthy["schedulers"]["pull"]["overdue"] is False
    config, _db = child.open()
    _db.dispose()
    holder = sqlite3.connect(config.db_url.removeprefix("sqlite:///"))
    try:
        holder.execute("BEGIN IMMEDIATE")
        late = _health_until(child, lambda b: bool(b["schedulers"]["pull"]["overdue"]))
        assert late["status"] == "degraded" and late["database"] == "ok"
        assert late["schedulers"]["push"]["overdue"] is False  # push is not scheduled
        with admin_pages(child) as pages:
            live = pages.get("/sync2/live").text
        assert "Scheduled pull is overdue" in live and "Scheduled push" not in live
        shown = CliRunner(env={"COLUMNS": "200"}).invoke(
            build_app(), ["status", str(child.node_dir)]
        )
        assert "scheduled pull is overdue" in shown.stdout, shown.output
        assert shown.exit_code == 0, shown.output  # overdue is said, not an exit code of its own
    finally:
        holder.rollback()
        holder.close()
    # The lock is gone: the next scheduled run goes through and the node is healthy again.
    back = _health_until(child, lambda b: b["status"] == "ok")
    assert back["schedulers"]["pull"]["overdue"] is False
