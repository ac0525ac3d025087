"""The admin pages in a real browser: sign-in, audit, retry rights, configuration errors, CSRF."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in, screenshot
from tests.conftest import NodeFactory

from fhirsync.settings import RECOVERY_FILE
from fhirsync.store import audit, users
from fhirsync.store.audit import AuditEntry, AuditPolicy
from fhirsync.testing.servers import NodeHandle

pytestmark = pytest.mark.browser


def _add_user(node: NodeHandle, name: str, role: str) -> str:
    _config, db = node.open()
    try:
        with db.write() as conn:
            users.add(conn, name, "password-123", role)  # type: ignore[arg-type]
    finally:
        db.dispose()
    return "password-123"


def _failed_pull(node: NodeHandle, category: str = "patient") -> str:
    """An audit row as the pull engine writes it for a record the parent served invalid."""
    record = str(uuid.uuid4())
    entry = AuditEntry(
        success=False,
        resource_name=category,
        record_uuid=record,
        action="CREATED",
        operation="PULL",
        details="Patient.gender: 'femme' is not a code of the required value set",
        link_type="fhir",
        available_resource_urls={"fhir": f"/ws/fhir2/R4/Patient/{record}"},
        parent_url="http://parent.example",
        creator_instance_id=node.instance_id,
        error_class="InvalidResource",
    )
    _config, db = node.open()
    try:
        with db.write() as conn:
            (stored,) = audit.insert_many(
                conn, [entry], AuditPolicy(True, True), now=datetime.now(UTC)
            )
    finally:
        db.dispose()
    return stored.uuid


@pytest.fixture
def central(node_factory: NodeFactory) -> NodeHandle:
    return node_factory("central")


def test_unauthenticated_pages_redirect_to_sign_in(page: Page, central: NodeHandle) -> None:
    page.goto(f"{central.base_url}/sync2/audit")
    expect(page).to_have_url(re.compile(r"/sync2/login\?next=/sync2/audit"))
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong user name or password")


def test_failed_record_shows_on_dashboard_and_audit_list(page: Page, central: NodeHandle) -> None:
    message = _failed_pull(central)
    log_in(page, central.base_url, "admin", central.admin_password)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.locator("#live")).to_contain_text("Last record failed: patient")
    screenshot(page, "dashboard")
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Status").select_option("FAILURE")
    page.get_by_role("button", name="Show").click()
    row = page.locator("tbody tr").first
    expect(row).to_contain_text("Failed")
    expect(row).to_contain_text("patient")
    screenshot(page, "audit-list")
    row.get_by_role("link", name="Details").click()
    expect(page).to_have_url(re.compile(message))
    expect(
        page.get_by_text("The record was rejected because its content is not valid")
    ).to_be_visible()
    screenshot(page, "audit-detail")


def test_a_restored_node_says_so_until_its_recovery_pull(page: Page, central: NodeHandle) -> None:
    # What `fhirsync backup` leaves in the copy; the first complete pull deletes it.
    recovery = central.node_dir / RECOVERY_FILE
    recovery.write_text("restored\n")
    log_in(page, central.base_url, "admin", central.admin_password)
    expect(page.locator("#live")).to_contain_text("Restored from a backup")
    recovery.unlink()
    page.reload()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.locator("#live")).not_to_contain_text("Restored from a backup")


def test_viewer_cannot_retry(page: Page, central: NodeHandle) -> None:
    message = _failed_pull(central)
    password = _add_user(central, "watcher", "viewer")
    log_in(page, central.base_url, "watcher", password)
    expect(page.get_by_role("button", name="Pull now")).to_have_count(0)
    page.goto(f"{central.base_url}/sync2/audit/{message}")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.get_by_text("Only administrators can retry")).to_be_visible()
    # The server refuses too, even with a valid CSRF token of the viewer's own session.
    token = page.locator("input[name=csrf_token]").first.input_value()
    answer = page.request.post(
        f"{central.base_url}/sync2/audit/{message}/retry", form={"csrf_token": token}
    )
    assert answer.status == 403


def test_invalid_configuration_edit_names_the_field_and_changes_nothing(
    page: Page, central: NodeHandle
) -> None:
    before = (central.node_dir / "sync2.json").read_bytes()
    log_in(page, central.base_url, "admin", central.admin_password)
    page.get_by_role("link", name="Configuration").click()
    data = json.loads(page.get_by_label("Contents").input_value())
    data["pull"]["schedule"] = "often"
    page.get_by_label("Contents").fill(json.dumps(data, indent=2))
    page.get_by_role("button", name="Check and save").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Nothing was changed")
    expect(alert.locator("code")).to_have_text("pull.schedule")
    screenshot(page, "config-error")
    assert (central.node_dir / "sync2.json").read_bytes() == before
    # A valid edit is saved and takes effect.
    data["pull"]["schedule"] = 600
    page.get_by_label("Contents").fill(json.dumps(data, indent=2))
    page.get_by_role("button", name="Check and save").click()
    expect(page.get_by_role("status")).to_contain_text("Configuration saved")
    assert json.loads((central.node_dir / "sync2.json").read_text())["pull"]["schedule"] == 600


def test_form_without_csrf_token_is_refused(page: Page, central: NodeHandle) -> None:
    log_in(page, central.base_url, "admin", central.admin_password)
    before = (central.node_dir / "sync2.json").read_bytes()
    # Remove the hidden token from the page's form, as a forged cross-site form would lack it.
    page.get_by_role("link", name="Configuration").click()
    page.locator("form[action='/sync2/config'] input[name=csrf_token]").evaluate("e => e.remove()")
    page.get_by_role("button", name="Check and save").click()
    expect(page.get_by_role("heading", name="Error 403")).to_be_visible()
    assert (central.node_dir / "sync2.json").read_bytes() == before


def test_child_accounts_cannot_sign_in(page: Page, central: NodeHandle) -> None:
    _config, db = central.open()
    try:
        with db.write() as conn:
            users.add(conn, "clinic-b", "password-123", "child", "clinic-b")
    finally:
        db.dispose()
    page.goto(f"{central.base_url}/sync2/login")
    page.get_by_label("User name").fill("clinic-b")
    page.get_by_label("Password").fill("password-123")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("child node's account")
    assert httpx.get(f"{central.base_url}/sync2/", follow_redirects=False).status_code == 303


def test_many_parked_failures_are_counted_and_the_page_shows_the_most_urgent(
    page: Page, central: NodeHandle
) -> None:
    from fhirsync.server.routes.admin_failures import SHOWN
    from fhirsync.store import failures
    from fhirsync.store.failures import FailureNote

    total = SHOWN + 3
    now = datetime.now(UTC)

    def note(n: int) -> FailureNote:
        return FailureNote(
            "pull", "marker", "patient", str(uuid.uuid4()), f"tag:{n}", "CREATED", {},
            "InvalidResource", f"broken record {n}", "parked", 3,
        )  # fmt: skip

    notes = [note(n) for n in range(total)]
    _config, db = central.open()
    try:
        with db.write() as conn:
            failures.record(conn, notes, now=now)
    finally:
        db.dispose()
    log_in(page, central.base_url, "admin", central.admin_password)
    parked = page.locator("#live a[href='/sync2/failures']").first
    expect(parked).to_have_text(str(total))
    parked.click()
    expect(page.locator("#failures-shown")).to_contain_text(
        f"Showing the {SHOWN} most urgent of {total} open failures"
    )
    expect(page.locator("tbody tr")).to_have_count(SHOWN)


def test_enabling_pull_on_the_configuration_page_starts_scheduled_pulls(
    page: Page, node_factory: NodeFactory
) -> None:
    from tests.integration.pull_support import held, new_uuid, patient, put

    parent = node_factory("parent")
    child = node_factory("child", parent=parent)
    first = new_uuid()
    put(parent, patient(first, "Scheduled"))
    log_in(page, child.base_url, "admin", child.admin_password)
    page.get_by_role("link", name="Configuration").click()
    data = json.loads(page.get_by_label("Contents").input_value())
    assert data["pull"]["enabled"] is False
    data["pull"].update(enabled=True, schedule=1)
    page.get_by_label("Contents").fill(json.dumps(data, indent=2))
    page.get_by_role("button", name="Check and save").click()
    expect(page.get_by_role("status")).to_contain_text("Configuration saved")
    # No restart: the running node's scheduler picks the change up and pulls.
    deadline = time.monotonic() + 30
    while ("patient", first) not in held(child):
        assert time.monotonic() < deadline, "no scheduled pull after enabling it"
        time.sleep(0.2)

    data["pull"]["enabled"] = False
    page.get_by_label("Contents").fill(json.dumps(data, indent=2))
    page.get_by_role("button", name="Check and save").click()
    expect(page.get_by_role("status")).to_contain_text("Configuration saved")
    time.sleep(3)  # the scheduler notices within 2 seconds
    later = new_uuid()
    put(parent, patient(later, "After"))
    time.sleep(3)  # three schedule periods
    assert ("patient", later) not in held(child)
