"""The failure counts of the dashboard and the Children page say what still needs someone: a
dismissed, a successfully retried and a conflicting record are not counted as failures."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import NodeFactory
from tests.integration.api_support import admin_pages, post_form
from tests.integration.conflict_support import PAIR, edit
from tests.integration.pull_support import new_uuid, patient, pull, write_raw

from fhirsync.store import audit_query, failures, users
from fhirsync.store.audit_query import AuditMessage
from fhirsync.testing.network import build_network, create_patient, sync_until_quiet
from fhirsync.testing.servers import NodeHandle

pytestmark = pytest.mark.postgres


def dashboard_figure(node: NodeHandle, label: str) -> int:
    """The number the dashboard's "Needs attention" card shows for ``label``."""
    with admin_pages(node) as client:
        html = client.get("/sync2/").text
    found = re.search(rf"<dt>{re.escape(label)}</dt>\s*<dd><a[^>]*>(\d+)</a></dd>", html)
    assert found is not None, html
    return int(found.group(1))


def failed_pull(node_factory: NodeFactory) -> tuple[NodeHandle, NodeHandle, str]:
    """A parent holding an invalid patient, and a child whose pull parked it: (parent, child,
    the patient's uuid)."""
    parent = node_factory("parent")
    bad = new_uuid()
    write_raw(parent, "patient", [{**patient(bad, "Bad"), "gender": "robot"}], "parent")
    child = node_factory("child", parent=parent, extra_settings={"record_max_attempts": 1})
    assert pull(child).outcome == "failures"
    return parent, child, bad


def open_failure_id(node: NodeHandle) -> int:
    _config, db = node.open()
    try:
        with db.read() as conn:
            [found] = failures.list_open(conn)
    finally:
        db.dispose()
    return found.id


def test_a_dismissed_failure_is_no_longer_counted(node_factory: NodeFactory) -> None:
    _parent, child, _bad = failed_pull(node_factory)
    assert dashboard_figure(child, "Failed audit messages") == 1
    failure_id = open_failure_id(child)
    with admin_pages(child) as client:
        done = post_form(
            client, "/sync2/failures", f"/sync2/failures/{failure_id}/dismiss", reason="a test"
        )
        assert done.status_code == 303, done.text
    # The dismissal is itself a failed audit row: the count went from 1 to 2.
    assert dashboard_figure(child, "Failed audit messages") == 0
    assert dashboard_figure(child, "Parked failures") == 0


def test_a_failure_retried_successfully_is_no_longer_counted(node_factory: NodeFactory) -> None:
    parent, child, bad = failed_pull(node_factory)
    write_raw(parent, "patient", [patient(bad, "Fixed")], "parent")
    failure_id = open_failure_id(child)
    with admin_pages(child) as client:
        done = post_form(client, "/sync2/failures", f"/sync2/failures/{failure_id}/retry")
        assert done.status_code == 303, done.text
        assert "Retry succeeded" in client.get("/sync2/failures").text
    assert dashboard_figure(child, "Failed audit messages") == 0


def test_a_conflict_is_counted_under_conflicts_not_failures(tmp_path: Path) -> None:
    net = build_network(tmp_path / "net", PAIR)
    try:
        parent, child = net.nodes["parent"], net.nodes["child"]
        record = create_patient(parent, "Mensah")
        sync_until_quiet(net)
        edit(parent, record, gender="male")
        edit(child, record, gender="other")
        sync_until_quiet(net)
        assert dashboard_figure(child, "Open conflicts") == 1
        assert dashboard_figure(child, "Failed audit messages") == 0
    finally:
        net.stop()


def test_the_children_page_counts_each_child_s_failures_still_to_handle(
    node_factory: NodeFactory,
) -> None:
    parent = node_factory("parent")
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)

    def message(creator: str, minutes_ago: int, **fields: object) -> AuditMessage:
        values: dict[str, object] = {
            "id": None,
            "uuid": str(uuid.uuid4()),
            "success": False,
            "timestamp": now - timedelta(minutes=minutes_ago),
            "resource_name": "patient",
            "record_uuid": str(uuid.uuid4()),
            "operation": "PUSH",
            "creator_instance_id": creator,
        }
        return AuditMessage(**{**values, **fields})  # type: ignore[arg-type]

    _config, db = parent.open()
    try:
        with db.write() as conn:
            for name in ("clinic-a", "clinic-b"):
                users.add(conn, name, "child-password-1", "child", name)
            for made in (
                message("clinic-a", 50),
                message("clinic-a", 40, next_message_uuid="its-retry"),
                message("clinic-a", 30, error_class="Dismissed"),
                message("clinic-a", 20, merge_conflict_uuid="a-conflict"),
                message("clinic-a", 3, success=True),
                message("clinic-b", 600),
            ):
                audit_query.insert_message(conn, made)
    finally:
        db.dispose()
    with admin_pages(parent) as client:
        html = client.get("/sync2/children").text
    rows = {
        name: re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        for name, row in re.findall(
            r'<tr class="[^"]*">\s*<td class="ident">([\w-]+)(.*?)</tr>', html, re.S
        )
    }
    assert set(rows) == {"clinic-a", "clinic-b"}, html
    assert ">1</a>" in rows["clinic-a"][-1] and "active" in html
    assert "/sync2/audit?status=OPEN&origin=clinic-a" in rows["clinic-a"][-1]
    assert ">1</a>" in rows["clinic-b"][-1]
    assert "not seen recently" in html  # clinic-b: ten hours ago
    assert "still need" in html  # the hint says what is counted


def test_the_count_links_to_the_messages_it_counts(node_factory: NodeFactory) -> None:
    # The count linked to every failed message, the dismissal and its failure included: the
    # administrator clicked "1" and found two rows, neither needing anything.
    _parent, child, _bad = failed_pull(node_factory)
    _config, db = child.open()
    try:
        with db.read() as conn:
            [failure] = failures.list_open(conn)
    finally:
        db.dispose()
    with admin_pages(child) as client:
        assert 'href="/sync2/audit?status=OPEN"' in client.get("/sync2/").text
        listed = client.get("/sync2/audit?status=OPEN").text
        assert "1 message(s)" in listed and str(failure.audit_uuid) in listed
        post_form(client, "/sync2/failures", f"/sync2/failures/{failure.id}/dismiss", reason="x")
        assert "0 message(s)" in client.get("/sync2/audit?status=OPEN").text
        assert "2 message(s)" in client.get("/sync2/audit?status=FAILURE").text
