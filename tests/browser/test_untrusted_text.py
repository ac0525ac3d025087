"""Record data, failure reasons and conflict values shown on the admin pages are untrusted text:
markup in them stays text, and a long run without spaces (a base64 photo, a URL) wraps inside the
page instead of making it tens of thousands of pixels wide."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in
from tests.conftest import NodeFactory

from fhirsync.store import audit, conflicts, failures
from fhirsync.store.audit import AuditEntry, AuditPolicy
from fhirsync.store.conflicts import ConflictNote
from fhirsync.store.failures import FailureNote
from fhirsync.testing.servers import NodeHandle

pytestmark = pytest.mark.browser

HOSTILE = (
    '<script>window.__injected = 1</script>"\'><img src=x onerror="window.__injected = 2">'
    "{{ 7*7 }} ሰላም ជំរាបសួរ שלום مرحبا "
)
UNBROKEN = "QUJD" * 750
"""3,000 characters without a space, like the base64 of a photo in a Patient."""


def _store_hostile_rows(node: NodeHandle) -> tuple[str, str]:
    """A parked failure, a failed audit message and an open conflict full of hostile text."""
    record = str(uuid.uuid4())
    now = datetime.now(UTC)

    def body(gender: str) -> bytes:
        return orjson.dumps(
            {
                "resourceType": "Patient",
                "id": record,
                "gender": gender,
                "name": [{"family": HOSTILE}],
                "photo": [{"data": gender + UNBROKEN}],
            }
        )

    failure = FailureNote(
        "pull", "marker", "patient", record, "tag:1", "CREATED", {}, "InvalidResource",
        HOSTILE + UNBROKEN, "parked", 3,
    )  # fmt: skip
    conflict = ConflictNote(
        "patient", record, "pull", body("unknown"), "active", body("female"), "active",
        body("male"), "active", "2", ["gender", "photo"],
    )  # fmt: skip
    _config, db = node.open()
    try:
        with db.write() as conn:
            failures.record(conn, [failure], now=now)
            [conflict_uuid] = conflicts.record_many(conn, [conflict], now=now)
            message, _reported = audit.insert_many(
                conn,
                [
                    AuditEntry(
                        success=False,
                        resource_name="patient",
                        record_uuid=record,
                        action="CREATED",
                        operation="PULL",
                        details=HOSTILE + UNBROKEN,
                        link_type="fhir",
                        available_resource_urls={"fhir": f"/ws/fhir2/R4/Patient/{UNBROKEN}"},
                        parent_url=f"http://parent.example/{UNBROKEN}",
                        creator_instance_id=node.instance_id,
                        error_class="InvalidResource",
                    ),
                    # What a child reported, under the longest instance id a column holds.
                    AuditEntry(
                        success=False,
                        resource_name="patient",
                        record_uuid=record,
                        action="UPDATED",
                        operation="PUSH",
                        details=HOSTILE,
                        creator_instance_id="clinic-" + "x" * 248,
                        error_class="InvalidResource",
                    ),
                ],
                AuditPolicy(True, True),
                now=now,
            )
    finally:
        db.dispose()
    return message.uuid, conflict_uuid


def _assert_fits_and_inert(page: Page) -> None:
    if "/sync2/audit?" not in page.url:  # the list shows no details
        expect(page.get_by_text("<script>window.__injected").first).to_be_attached()
    assert page.evaluate("window.__injected") is None, "text from the data ran as script"
    width, viewport = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert width <= viewport, f"{page.url} is {width} px wide in a {viewport} px window"


def test_hostile_and_unbroken_text_stays_inert_and_inside_the_window(
    page: Page, node_factory: NodeFactory
) -> None:
    node = node_factory("central")
    message, conflict = _store_hostile_rows(node)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, node.base_url, "admin", node.admin_password)
    pages = (
        "/sync2/failures",
        "/sync2/audit?status=FAILURE",
        f"/sync2/audit/{message}",
        f"/sync2/conflicts/{conflict}",
    )
    for path in pages:
        page.goto(f"{node.base_url}{path}")
        _assert_fits_and_inert(page)
    # The buttons of a wide row are still on screen, where an administrator can reach them.
    page.goto(f"{node.base_url}/sync2/failures")
    expect(page.get_by_role("button", name="Dismiss")).to_be_in_viewport()
    assert dialogs == []


def test_a_long_instance_id_wraps_in_the_page_header(page: Page, node_factory: NodeFactory) -> None:
    # The header showed the node's instance id on one line: 200 characters without a space
    # made every page 1,900 px wide.
    from tests.integration.pull_support import edit_sync2

    node = node_factory("central", start=False)
    edit_sync2(node, localInstanceId=f"hospital-{'x' * 200}")
    node.start()
    log_in(page, node.base_url, "admin", node.admin_password)
    for path in ("/sync2/", "/sync2/audit"):
        page.goto(f"{node.base_url}{path}")
        width, viewport = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert width <= viewport, f"{path} is {width} px wide in a {viewport} px window"
