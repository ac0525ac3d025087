"""The admin pages over plain HTTP, as a demanding administrator uses them: odd query strings,
hand-made URLs, stale tabs and forms posted twice never end in a server error."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from tests.conftest import NodeFactory
from tests.integration.api_support import admin_pages, post_form
from tests.integration.pull_support import invalid_patient_with_visit, pull

from fhirsync.store import audit_query
from fhirsync.store.audit_query import AuditMessage
from fhirsync.testing.servers import NodeHandle

pytestmark = pytest.mark.postgres

HUGE = "99999999999999999999"
BEYOND_32_BITS = str(2**31)
"""Fits SQLite's 64-bit row ids but not PostgreSQL's 32-bit (SERIAL) ones: was a 500 there."""


def insert_messages(
    node: NodeHandle, count: int, *, minutes_ago: int = 60, **fields: object
) -> list[str]:
    """``count`` failed PULL audit messages of this node (``fields`` replace any of that) from
    ``minutes_ago`` on, one second apart (newest last)."""
    start = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(minutes=minutes_ago)
    made = [
        AuditMessage(
            **{  # type: ignore[arg-type]
                "id": None,
                "uuid": str(uuid.uuid4()),
                "success": False,
                "timestamp": start + timedelta(seconds=n),
                "resource_name": "patient",
                "record_uuid": str(uuid.uuid4()),
                "operation": "PULL",
                "creator_instance_id": node.instance_id,
                **fields,
            }
        )
        for n in range(count)
    ]
    _config, db = node.open()
    try:
        with db.write() as conn:
            for message in made:
                audit_query.insert_message(conn, message)
    finally:
        db.dispose()
    return [m.uuid for m in made]


@pytest.mark.parametrize(
    "query",
    [
        "since=9999-12-31T23:59-05:00",
        "until=0001-01-01T00:00%2B05:00",
        "since=2024-02-30",
        "since=yesterday",
    ],
)
def test_an_unusable_time_filter_is_named_not_a_server_error(node: NodeHandle, query: str) -> None:
    with admin_pages(node) as client:
        response = client.get(f"/sync2/audit?{query}")
    assert response.status_code == 200, response.text
    assert "is not a date and time" in response.text


def test_a_page_past_the_end_shows_the_last_page(node: NodeHandle) -> None:
    from fhirsync.server.routes.admin_audit import PAGE_SIZE

    made = insert_messages(node, PAGE_SIZE + 3)
    with admin_pages(node) as client:
        for page in ("3", "500", HUGE):
            response = client.get(f"/sync2/audit?status=FAILURE&page={page}", follow_redirects=True)
            assert response.status_code == 200, response.text
            assert response.url.params["page"] == "2"
            assert response.url.params["status"] == "FAILURE"
            assert "page 2 of 2" in response.text
            # The oldest three, and nothing else.
            assert all(u in response.text for u in made[:3])
            assert made[3] not in response.text


@pytest.mark.parametrize("action", ["retry", "dismiss"])
@pytest.mark.parametrize("failure_id", [HUGE, BEYOND_32_BITS])
def test_a_failure_id_no_database_holds_is_not_a_server_error(
    node: NodeHandle, action: str, failure_id: str
) -> None:
    with admin_pages(node) as client:
        response = post_form(
            client, "/sync2/failures", f"/sync2/failures/{failure_id}/{action}", reason="duplicate"
        )
    assert response.status_code < 500, response.text


def test_a_record_left_waiting_for_a_dismissed_patient_can_be_dismissed_on_the_page(
    node_factory: NodeFactory,
) -> None:
    # Only parked rows had the Dismiss form: once its patient was dismissed, an encounter
    # waited for it for good, and the page offered no way to close it (status stayed at 1).
    from fhirsync.store import failures

    parent = node_factory("parent")
    bad, visit = invalid_patient_with_visit(parent)
    child = node_factory("child", parent=parent, extra_settings={"record_max_attempts": 1})
    assert pull(child).outcome == "failures"
    _config, db = child.open()
    try:
        with db.read() as conn:
            by_record = {f.record_uuid: f for f in failures.list_open(conn, "pull")}
    finally:
        db.dispose()
    parked, waiting = by_record[bad], by_record[visit]
    assert (parked.status, waiting.status) == ("parked", "waiting")
    with admin_pages(child) as client:
        page = client.get("/sync2/failures").text
        assert f'action="/sync2/failures/{parked.id}/retry"' in page
        # A waiting row offers no Retry: it is tried by itself once its record is here.
        assert f'action="/sync2/failures/{waiting.id}/retry"' not in page
        for row in (parked, waiting):
            assert f'action="/sync2/failures/{row.id}/dismiss"' in page
            done = post_form(
                client,
                "/sync2/failures",
                f"/sync2/failures/{row.id}/dismiss",
                reason="entered twice",
            )
            assert done.status_code == 303, done.text
        page = client.get("/sync2/failures").text
    assert "No failed records" in page


def test_an_upto_no_database_holds_is_not_a_server_error(node: NodeHandle) -> None:
    made = insert_messages(node, 2)
    with admin_pages(node) as client:
        response = client.get(f"/sync2/audit?upto={BEYOND_32_BITS}")
    assert response.status_code < 500, response.text
    assert response.status_code != 200 or all(u in response.text for u in made)


def test_paging_neither_repeats_nor_skips_rows_when_new_messages_arrive(node: NodeHandle) -> None:
    import re

    from fhirsync.server.routes.admin_audit import PAGE_SIZE

    made = insert_messages(node, PAGE_SIZE + 5)
    with admin_pages(node) as client:
        first = client.get("/sync2/audit").text
        # A pull records new messages while the administrator reads page 1.
        insert_messages(node, 7, minutes_ago=1)
        older = re.search(r'<a href="([^"]+)">Older', first)
        assert older, "page 1 has no link to older messages"
        second = client.get(older.group(1).replace("&amp;", "&")).text
        newer = re.search(r'<a href="([^"]+)">← Newer', second)
        assert newer, "page 2 has no link back to newer messages"
        back = client.get(newer.group(1).replace("&amp;", "&")).text
    on_first = {u for u in made if u in first}
    on_second = {u for u in made if u in second}
    assert on_first == set(made[5:])
    assert on_second == set(made[:5])
    assert {u for u in made if u in back} == on_first


def test_the_record_filter_of_the_conflict_page_link_lists_that_record_only(
    node: NodeHandle,
) -> None:
    # The conflict page links "messages of this record" as /sync2/audit?record=UUID.
    wanted, other = insert_messages(node, 2)
    _config, db = node.open()
    try:
        with db.read() as conn:
            found = audit_query.get_message(conn, wanted)
    finally:
        db.dispose()
    assert found is not None and found.record_uuid
    with admin_pages(node) as client:
        listing = client.get(f"/sync2/audit?record={found.record_uuid}")
        assert listing.status_code == 200
        assert wanted in listing.text and other not in listing.text
        assert "1 message(s)" in listing.text
        # The filter stays on the form, so "Show" and "Retry all failed" keep it.
        assert listing.text.count(f'value="{found.record_uuid}"') == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("parentFeedLocation", "parent.example.org:8080"),
        ("parentFeedLocation", "ftp://parent.example.org"),
        ("parentFeedLocation", "http://"),
        ("localInstanceId", ""),
        ("localInstanceId", None),
    ],
)
def test_the_configuration_page_refuses_a_value_that_would_break_the_node(
    node_factory: NodeFactory, field: str, value: str | None
) -> None:
    parent = node_factory("parent")
    child = node_factory("child", parent=parent)
    stored = (child.node_dir / "sync2.json").read_text()
    data = json.loads(stored)
    data["general"][field] = value
    with admin_pages(child) as client:
        saved = post_form(client, "/sync2/config", "/sync2/config", sync2_json=json.dumps(data))
        assert saved.status_code == 400, saved.text
        assert f"general.{field}" in saved.text
        assert (child.node_dir / "sync2.json").read_text() == stored
        # The node goes on working with the configuration it had.
        assert client.get("/sync2/").status_code == 200
        pulled = post_form(client, "/sync2/", "/sync2/pull")
        assert pulled.status_code == 303
        assert "Pulled successfully" in client.get(pulled.headers["location"]).text


def test_retention_keeps_the_audit_message_a_parked_failure_links_to(
    node_factory: NodeFactory,
) -> None:
    import re

    from fhirsync.store import failures
    from fhirsync.store.failures import FailureNote

    node = node_factory("central", extra_settings={"audit_retention_days": 30})
    old_failure, old_other = insert_messages(node, 2, minutes_ago=100 * 24 * 60)
    _config, db = node.open()
    try:
        with db.write() as conn:
            message = audit_query.get_message(conn, old_failure)
            assert message is not None and message.record_uuid
            note = FailureNote(
                "pull", "marker", "patient", message.record_uuid, "tag:1", "CREATED", {},
                "InvalidResource", "broken record", "parked", 3, audit_uuid=old_failure,
            )  # fmt: skip
            failures.record(conn, [note], now=datetime.now(UTC) - timedelta(days=100))
    finally:
        db.dispose()
    node.stop()
    node.start()  # retention runs at start-up
    with admin_pages(node) as client:
        page = client.get("/sync2/failures").text
        links = re.findall(r'href="(/sync2/audit/[^"]+)"', page)
        assert links == [f"/sync2/audit/{old_failure}"]
        assert client.get(links[0]).status_code == 200
        assert client.get(f"/sync2/audit/{old_other}").status_code == 404


def test_an_unusable_time_leaves_the_other_filters_in_force(node: NodeHandle) -> None:
    (failed,) = insert_messages(node, 1)
    (succeeded,) = insert_messages(node, 1, success=True)
    with admin_pages(node) as client:
        listing = client.get("/sync2/audit?status=FAILURE&since=yesterday").text
    assert "is not a date and time" in listing
    assert failed in listing and succeeded not in listing


def test_saving_a_preferred_client_that_names_no_client_says_so(node: NodeHandle) -> None:
    data = json.loads((node.node_dir / "sync2.json").read_text())
    data["push"]["classes"][0]["preferredClient"] = "fihr"
    with admin_pages(node) as client:
        saved = post_form(client, "/sync2/config", "/sync2/config", sync2_json=json.dumps(data))
        assert saved.status_code == 303, saved.text
        shown = client.get(saved.headers["location"]).text
    assert "Configuration saved." in shown
    assert "push.classes[0].preferredClient &#39;fihr&#39; names no client" in shown


def test_a_dismissal_reason_holding_a_nul_is_kept_readable(node: NodeHandle) -> None:
    # The reason goes into the failure's note and an audit row: PostgreSQL refused the NUL
    # (a 500, the failure left open) where SQLite stored it.
    from sqlalchemy import select

    from fhirsync.store import failures
    from fhirsync.store.failures import FailureNote
    from fhirsync.store.tables import failures as failures_table

    _config, db = node.open()
    try:
        with db.write() as conn:
            note = FailureNote(
                "pull", "marker", "patient", str(uuid.uuid4()), "tag:1", "CREATED", {},
                "InvalidResource", "broken record", "parked", 3,
            )  # fmt: skip
            failures.record(conn, [note], now=datetime.now(UTC))
            (failure,) = failures.list_open(conn)
    finally:
        db.dispose()
    with admin_pages(node) as client:
        response = post_form(
            client, "/sync2/failures", f"/sync2/failures/{failure.id}/dismiss", reason="dup\x00"
        )
    assert response.status_code == 303, response.text
    _config, db = node.open()
    try:
        with db.read() as conn:
            dismissed = failures.get(conn, failure.id)
            kept = conn.execute(select(failures_table.c.note)).scalar_one()
    finally:
        db.dispose()
    assert dismissed is not None and dismissed.status == "dismissed"
    assert kept.endswith("dup\\x00")
