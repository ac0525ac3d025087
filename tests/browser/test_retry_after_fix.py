"""In a real browser, on a real parent and child: a pull that fails for one record shows on the
dashboard and the audit list; Retry succeeds once the record is fixed at the parent; a second
failure is dismissed with a reason from the Failed records page. Screenshots of the pages an
administrator uses go to test-artifacts/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in, screenshot
from tests.conftest import NodeFactory
from tests.integration.pull_support import edit_sync2, held, new_uuid, patient, put, write_raw

pytestmark = pytest.mark.browser


def test_retry_succeeds_after_the_cause_is_fixed(page: Page, node_factory: NodeFactory) -> None:
    parent = node_factory("parent")
    good, bad, other = new_uuid(), new_uuid(), new_uuid()
    put(parent, patient(good, "Good"))
    # Straight into the parent's store: its API would refuse these bodies.
    invalid = [{**patient(u, "Bad"), "gender": "robot"} for u in (bad, other)]
    write_raw(parent, "patient", invalid, "parent")
    child = node_factory(
        "child", parent=parent, start=False, extra_settings={"record_max_attempts": 1}
    )
    edit_sync2(child, persistFailureAudit=True, persistSuccessAudit=True)
    child.start()

    log_in(page, child.base_url, "admin", child.admin_password)
    page.get_by_role("button", name="Pull now").click()
    expect(page.get_by_role("status")).to_contain_text("2 failed")
    live = page.locator("#live")
    expect(live).to_contain_text("Parked failures")
    expect(live.locator("a[href='/sync2/failures']").first).to_have_text("2")
    expect(live).to_contain_text("Lag per category")
    screenshot(page, "dashboard-after-failed-pull")

    page.goto(f"{child.base_url}/sync2/audit?status=FAILURE")
    row = page.locator("tr", has_text=bad)
    expect(row).to_contain_text("Failed")
    screenshot(page, "audit-list-failures")

    put(parent, patient(bad, "Fixed"))  # the cause is fixed where the record lives
    row.get_by_role("link", name="Details").click()
    expect(
        page.get_by_text("The record was rejected because its content is not valid")
    ).to_be_visible()
    page.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_contain_text("Retry succeeded")
    # The page now shows the new (successful) row, which links back to the failure it retries.
    expect(page.get_by_role("heading", level=1)).to_contain_text("succeeded")
    expect(page.get_by_text("follows up")).to_be_visible()
    new_url = page.url
    page.get_by_role("link", name="an earlier failure").click()
    expect(page.get_by_role("link", name="see the next message")).to_have_attribute(
        "href", re.compile(re.escape(new_url.rsplit("/", 1)[1]))
    )
    assert ("patient", bad) in held(child)

    page.goto(f"{child.base_url}/sync2/failures")
    failure = page.locator("tr", has_text=other)
    expect(failure).to_contain_text("Parked")
    screenshot(page, "failures-parked")
    failure.get_by_label("Reason for dismissing").fill("test record, not real")
    failure.get_by_role("button", name="Dismiss").click()
    expect(page.get_by_role("status")).to_contain_text("Dismissed patient")
    expect(page.locator("tr", has_text=other)).to_have_count(0)

    page.goto(f"{child.base_url}/sync2/audit?status=FAILURE")
    dismissed = page.locator("tr", has_text="Dismissed").first
    expect(dismissed).to_contain_text(other)
    dismissed.get_by_role("link", name="Details").click()
    expect(
        page.locator("pre", has_text="Dismissed by admin: test record, not real")
    ).to_be_visible()
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
