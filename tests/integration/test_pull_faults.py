"""Pull under faults, against real nodes on 127.0.0.1: the child process killed with SIGKILL in the
middle of a run, a malformed feed page, an invalid record at the parent (retried, parked, visible,
retried by hand) with a record that depends on it, and the scheduled pull of ``fhirsync serve``
beside a manual pull.

After each, the child holds exactly the parent's records (uuids and content hashes) and its own
event log shows every change applied exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from sqlalchemy import select
from tests.conftest import NodeFactory
from tests.integration.pull_support import (
    cli,
    committed_records,
    edit_sync2,
    event_actions,
    held,
    invalid_patient_with_visit,
    new_uuid,
    patient,
    pull,
    put,
    record_count,
    save_sync2,
    write_raw,
)

from fhirsync.errors import RunStopped
from fhirsync.store import failures, locks, runs
from fhirsync.store.tables import audit, markers
from fhirsync.sync.runner import run_pull
from fhirsync.sync.status import CategoryStopped, RunEvent, RunProgress
from fhirsync.testing.javafeed import JavaEvent, JavaFeedServer
from fhirsync.testing.proxy import FaultProxy
from fhirsync.testing.servers import NodeHandle

# --- kill -9 of the child process --------------------------------------------------------------


def test_child_killed_mid_run_applies_every_change_exactly_once(node_factory: NodeFactory) -> None:
    total = 4000
    parent = node_factory("parent", extra_settings={"feed_page_size": 50})
    uuids = [new_uuid() for _ in range(total)]
    for start in range(0, total, 1000):
        chunk = uuids[start : start + 1000]
        write_raw(parent, "patient", [patient(u, f"K{n}") for n, u in enumerate(chunk)], "parent")
    child = node_factory("child", parent=parent, start=False)
    log = (child.node_dir / "pull.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fhirsync", "pull", str(child.node_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while committed_records(child) < 200 and process.poll() is None:
            assert time.monotonic() < deadline, "the child never committed a page"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
        log.close()
    assert process.returncode == -signal.SIGKILL, "the run finished before the kill"
    partial = record_count(child)
    assert 0 < partial < total
    # Pages are committed whole: what is there is a whole number of pages.
    assert partial % 50 == 0
    rerun = cli("pull", str(child.node_dir), "--wait", "5")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert held(child) == held(parent)
    assert event_actions(child) == {u: ["CREATED"] for u in uuids}


# --- a malformed feed page ---------------------------------------------------------------------


def test_a_malformed_page_stops_its_category_only(node_factory: NodeFactory) -> None:
    patients = [new_uuid() for _ in range(12)]  # pages 1..3 of 5
    locations = [new_uuid() for _ in range(3)]
    feed = [JavaEvent("patient", u) for u in patients]
    feed += [JavaEvent("location", u) for u in locations]
    bodies = [patient(u, f"M{n}") for n, u in enumerate(patients)]
    bodies += [{"resourceType": "Location", "id": u, "name": f"W{u[:4]}"} for u in locations]
    with JavaFeedServer(feed, fhir=bodies).start() as java:
        java.broken_pages.add(("patient", "2"))
        child = node_factory("child", start=False)
        edit_sync2(child, parentFeedLocation=java.base_url)
        stopped: list[CategoryStopped] = []

        def listen(event: RunEvent) -> None:
            if isinstance(event, CategoryStopped):
                stopped.append(event)

        config, db = child.open()
        try:
            broken = run_pull(config, db, listener=listen)
            with db.read() as conn:
                marked = conn.execute(
                    select(markers.c.category, markers.c.last_entry_id, markers.c.last_page)
                ).all()
        finally:
            db.dispose()
        assert broken.outcome == "failures", broken
        assert [(s.category.lower(), s.error_class) for s in stopped] == [
            ("patient", "MalformedFeed")
        ]
        # Page 1 is applied, the marker stays on its last entry; locations came in anyway.
        on_child = {u for (_c, u) in held(child)}
        assert on_child == set(patients[:5]) | set(locations)
        by_category = {c: (e, p) for c, e, p in marked}
        assert by_category["patient"] == (feed[4].entry_id, 1)
        # The command line names the broken category and exits 1.
        shown = cli("pull", str(child.node_dir))
        assert shown.returncode == 1, shown.stdout + shown.stderr
        assert "patient" in shown.stderr and "MalformedFeed" in shown.stderr
        status = cli("status", str(child.node_dir))
        assert status.returncode == 0, status.stdout + status.stderr  # nothing parked
        assert "MalformedFeed" in status.stdout, status.stdout
        # Once the page is fixed the next run resumes from the marker and completes.
        java.broken_pages.clear()
        healed = pull(child)
    assert healed.outcome == "ok", healed
    assert healed.applied == 7
    assert {u for (_c, u) in held(child)} == set(patients) | set(locations)


# --- the parent's feed pages change size -------------------------------------------------------


def test_bigger_parent_pages_lose_nothing_after_a_marker_mid_page(
    node_factory: NodeFactory,
) -> None:
    # The child last read a feed of 29 entries in pages of 3: its marker is entry 29 on page 10,
    # the parent's last page then. The parent's pages then become 10 entries long, and 6 more
    # changes come: entry 29 is now on page 3, page 10 does not exist, the last page is 4.
    parent = node_factory("parent", extra_settings={"feed_page_size": 3})
    first = [new_uuid() for _ in range(29)]
    for n, uuid in enumerate(first):
        put(parent, patient(uuid, f"Page{n}"))
    child = node_factory("child", parent=parent, start=False)
    assert pull(child).applied == 29
    parent.stop()
    settings_file = parent.node_dir / "fhirsync.json"
    settings = json.loads(settings_file.read_text())
    settings_file.write_text(json.dumps({**settings, "feed_page_size": 10}))
    parent.start()
    later = [new_uuid() for _ in range(6)]
    for n, uuid in enumerate(later):
        put(parent, patient(uuid, f"Later{n}"))
    done = pull(child)
    assert done.outcome == "ok", done
    # Entry 30, on page 3 with the marked entry, was skipped when the read resumed at page 4.
    assert held(child) == held(parent)
    _config, db = child.open()
    try:
        with db.read() as conn:
            notes = (
                conn.execute(select(audit.c.details).where(audit.c.action == "RECOVERED"))
                .scalars()
                .all()
            )
    finally:
        db.dispose()
    assert any("page 3" in note for note in notes), notes


# --- feeds the parent does not have ------------------------------------------------------------


def test_a_feed_the_parent_does_not_publish_stops_its_category_only(
    node_factory: NodeFactory,
) -> None:
    patients, locations = [new_uuid() for _ in range(3)], [new_uuid() for _ in range(2)]
    feed = [JavaEvent("patient", u) for u in patients]
    feed += [JavaEvent("location", u) for u in locations]
    bodies = [patient(u, f"F{n}") for n, u in enumerate(patients)]
    bodies += [{"resourceType": "Location", "id": u, "name": f"W{u[:4]}"} for u in locations]
    with JavaFeedServer(feed, fhir=bodies).start() as java:
        java.absent_feeds.add("location")
        child = node_factory("child", start=False)
        edit_sync2(child, parentFeedLocation=java.base_url)
        result = pull(child)
    assert result.outcome == "failures", result
    assert result.error is not None and "location feed:" in result.error
    assert "FeedNotFound" in result.error and "answered 404" in result.error
    assert {u for (_c, u) in held(child)} == set(patients)


def test_a_parent_url_without_any_feed_is_reported_once_as_the_setting_to_check(
    node_factory: NodeFactory,
) -> None:
    with JavaFeedServer([JavaEvent("patient", new_uuid())]).start() as java:
        child = node_factory("child", start=False)
        # The Java parent's context path left out: every feed answers 404.
        edit_sync2(child, parentFeedLocation=java.base_url.removesuffix("/openmrs"))
        result = pull(child)
        assert result.outcome == "unreachable", result
        assert result.error is not None and "check general.parentFeedLocation" in result.error
        shown = cli("pull", str(child.node_dir))
    assert shown.returncode == 3, shown.stdout + shown.stderr
    assert shown.stderr.count("stopped: FeedNotFound") == 3
    assert "more categories stopped with FeedNotFound" in shown.stderr
    assert "publishes none of the" in shown.stderr
    assert record_count(child) == 0


# --- an invalid record, and one that depends on it ---------------------------------------------


def test_an_invalid_record_is_parked_visible_and_retried_by_hand(
    node_factory: NodeFactory,
) -> None:
    parent = node_factory("parent")
    good = new_uuid()
    put(parent, patient(good, "Good"))
    bad, visit = invalid_patient_with_visit(parent)
    child = node_factory(
        "child",
        parent=parent,
        start=False,
        extra_settings={"record_max_attempts": 2, "retry_base_delay": 0.05},
    )
    edit_sync2(child, persistFailureAudit=True)
    node_dir = str(child.node_dir)

    first = cli("pull", node_dir)
    assert first.returncode == 1, first.stdout + first.stderr
    time.sleep(0.2)  # past the retry delay: the next run retries the bad record (attempt 2)
    second = cli("pull", node_dir)
    assert second.returncode == 1, second.stdout + second.stderr
    assert set(held(child)) == {("patient", good)}  # the encounter waits for its patient

    status = cli("status", node_dir)
    assert status.returncode == 1, status.stderr  # failures await an administrator
    assert f"parked patient/{bad}" in status.stdout, status.stdout
    assert "attempts=2" in status.stdout and "InvalidResource" in status.stdout
    assert f"waiting encounter/{visit}" in status.stdout, status.stdout
    listed = cli("audit", node_dir, "list", "--failed")
    assert listed.returncode == 0, listed.stderr
    assert bad in listed.stdout and "InvalidResource" in listed.stdout

    still_bad = cli("audit", node_dir, "retry")
    assert still_bad.returncode == 1, still_bad.stdout + still_bad.stderr

    put(parent, patient(bad, "Fixed"))  # fixed at the parent (a new UPDATED event too)
    fixed = cli("audit", node_dir, "retry")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert held(child) == held(parent)
    healthy = cli("status", node_dir)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "failures: none" in healthy.stdout
    assert event_actions(child)[visit] == ["CREATED"]
    assert event_actions(child)[bad] == ["CREATED"]


# --- scheduled pull inside serve, beside a manual pull -----------------------------------------


def test_scheduled_pull_in_serve_and_a_manual_pull_never_run_together(
    node_factory: NodeFactory,
) -> None:
    parent = node_factory("parent", extra_settings={"feed_page_size": 20})
    uuids = [new_uuid() for _ in range(300)]
    write_raw(parent, "patient", [patient(u, f"S{n}") for n, u in enumerate(uuids)], "parent")
    with FaultProxy("127.0.0.1", parent.port) as proxy:
        proxy.delay(0.05)  # every request a little slow: a scheduled run lasts a while
        via_proxy = NodeHandle(parent.node_dir, "parent", proxy.port, parent.admin_password)
        child = node_factory("child", parent=via_proxy, start=False)
        data = edit_sync2(child)
        data["pull"].update(enabled=True, schedule=1)
        save_sync2(child, data)
        child.start_process()
        try:
            deadline = time.monotonic() + 60
            while committed_records(child) == 0:
                assert time.monotonic() < deadline, "the scheduled pull never ran"
                time.sleep(0.02)
            # The scheduled run holds the run lock: a manual pull that will not wait is skipped.
            busy = cli("pull", str(child.node_dir), "--wait", "0")
            assert busy.returncode == 1, busy.stdout + busy.stderr
            assert "pull skipped" in busy.stdout
            # One that waits runs after it, and finds the work done (or finishes it).
            waited = cli("pull", str(child.node_dir), "--wait", "60")
            assert waited.returncode == 0, waited.stdout + waited.stderr
        finally:
            child.stop()
    assert held(child) == held(parent)
    assert event_actions(child) == {u: ["CREATED"] for u in uuids}


def test_a_record_that_keeps_waiting_is_audited_once_not_every_run(
    node_factory: NodeFactory,
) -> None:
    parent = node_factory("parent")
    bad, visit = invalid_patient_with_visit(parent)
    # Retries an hour apart: the four runs are over before the patient's retry is due, however
    # slowly a busy machine runs them (at the default 1 s, a loaded run retried it).
    child = node_factory(
        "child", parent=parent, start=False, extra_settings={"retry_base_delay": 3600}
    )
    edit_sync2(child, persistFailureAudit=True)
    results = [pull(child) for _ in range(4)]
    # The first run records the wait; later runs find it unchanged (the scheduler may run every
    # few seconds for days): no new audit row, no failure counted for it.
    assert audit_rows(child, visit) == 1
    assert results[0].failures == 2  # the invalid patient and the encounter waiting for it
    assert [r.failures for r in results[1:]] == [0, 0, 0]  # the patient's retry is not due yet
    _config, db = child.open()
    try:
        with db.read() as conn:
            [waiting] = [f for f in failures.list_open(conn, "pull") if f.record_uuid == visit]
    finally:
        db.dispose()
    assert (waiting.status, waiting.depends_on) == ("waiting", bad)


def held_up_child(
    node_factory: NodeFactory, **settings: object
) -> tuple[NodeHandle, NodeHandle, str, str]:
    """A parent with an invalid patient, then a good one, and a child with continue_on_failure
    off (and ``settings``) that has not pulled yet: parent, child, the bad uuid, the good one."""
    parent = node_factory("parent")
    bad, after = new_uuid(), new_uuid()
    write_raw(parent, "patient", [{**patient(bad, "Bad"), "gender": "robot"}], "parent")
    put(parent, patient(after, "After"))
    child = node_factory(
        "child",
        parent=parent,
        start=False,
        extra_settings={"continue_on_failure": False, **settings},
    )
    return parent, child, bad, after


def open_pull_failures(node: NodeHandle) -> list[failures.Failure]:
    """The node's open pull failures."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            return failures.list_open(conn, "pull")
    finally:
        db.dispose()


def test_with_continue_on_failure_off_a_parked_record_is_not_retried_every_run(
    node_factory: NodeFactory,
) -> None:
    # The feed stops just before the bad record, so every run reads it again: each read
    # counted an attempt (two a run once its retry was due too) and wrote an audit row, for as
    # long as it stayed broken, and a parked record was tried every run, not only by hand.
    parent, child, bad, after = held_up_child(
        node_factory, record_max_attempts=2, retry_base_delay=0.05
    )
    edit_sync2(child, persistFailureAudit=True)
    results = []
    for _ in range(4):
        results.append(pull(child))
        time.sleep(0.2)  # past the retry delay
    assert [r.outcome for r in results] == ["failures"] * 4  # the feed is still held up
    assert ("patient", after) not in held(child)
    [parked] = open_pull_failures(child)
    assert (parked.record_uuid, parked.status, parked.attempts) == (bad, "parked", 2)
    assert audit_rows(child, bad) == 2
    put(parent, patient(bad, "Fixed"))  # fixed at the parent: the feed moves on
    healed = pull(child)
    assert (healed.outcome, healed.applied) == ("ok", 2), healed
    assert held(child) == held(parent)


def test_with_continue_on_failure_off_a_dismissed_record_no_longer_holds_up_the_feed(
    node_factory: NodeFactory,
) -> None:
    # The feed stops just before the bad record; dismissing its failure is the administrator's
    # "go on without it". The next run read the entry again, parked a new failure and stayed
    # held up, so nothing after it ever arrived.
    parent, child, bad, after = held_up_child(node_factory, record_max_attempts=1)
    assert pull(child).outcome == "failures"
    [parked] = open_pull_failures(child)
    done = cli("audit", str(child.node_dir), "dismiss", str(parked.id), "--reason", "bad data")
    assert done.returncode == 0, done.stdout + done.stderr
    # Another bad record after it: the feed now stops there, and only there.
    worse = new_uuid()
    write_raw(parent, "patient", [{**patient(worse, "Worse"), "gender": "robot"}], "parent")
    moved = pull(child)
    assert (moved.outcome, moved.failures) == ("failures", 1), moved
    assert {u for (_c, u) in held(child)} == {after}
    [blocking] = open_pull_failures(child)
    assert blocking.record_uuid == worse
    put(parent, patient(worse, "Better"))
    assert pull(child).outcome == "ok"
    assert pull(child).events_read == 0
    # A later change of the dismissed record is a new change: it comes down.
    put(parent, patient(bad, "Fixed"))
    assert (pull(child).outcome, held(child)) == ("ok", held(parent))


def audit_rows(node: NodeHandle, record_uuid: str) -> int:
    """Audit rows about ``record_uuid`` on ``node``."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            query = select(audit.c.id).where(audit.c.record_uuid == record_uuid)
            return len(conn.execute(query).all())
    finally:
        db.dispose()


def test_a_run_asked_to_stop_ends_after_its_page_and_frees_the_lock(
    node_factory: NodeFactory,
) -> None:
    # serve stopping (SIGTERM) or pull disabled on the admin page while a long pull runs: the
    # run ends at the next page instead of reading the whole feed first.
    patients = [new_uuid() for _ in range(12)]  # pages of 5
    feed = [JavaEvent("patient", u) for u in patients]
    bodies = [patient(u, f"S{n}") for n, u in enumerate(patients)]
    with JavaFeedServer(feed, fhir=bodies).start() as java:
        child = node_factory("child", start=False)
        edit_sync2(child, parentFeedLocation=java.base_url)

        def stop_after_a_page(event: RunEvent) -> None:
            if isinstance(event, RunProgress):
                raise RunStopped("serve is stopping")

        config, db = child.open()
        try:
            stopped = run_pull(config, db, listener=stop_after_a_page)
            assert locks.holder(db, "pull") is None
            with db.read() as conn:
                state = runs.get(conn, "pull")
        finally:
            db.dispose()
        assert (stopped.outcome, stopped.applied) == ("stopped", 5)
        assert (state.outcome, state.applied) == ("stopped", 5)
        assert state.finished_at is not None
        assert {u for (_c, u) in held(child)} == set(patients[:5])
        resumed = pull(child)  # from the marker: nothing read twice
    assert (resumed.outcome, resumed.applied) == ("ok", 7)
