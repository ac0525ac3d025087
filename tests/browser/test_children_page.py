"""The Children page of a parent, in a real browser, after a child pushed: last push, records
received, and the flag of a child account never seen. Screenshot to test-artifacts/."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in, screenshot
from tests.conftest import NodeFactory
from tests.integration.pull_support import new_uuid, patient, put

from fhirsync.store import users
from fhirsync.sync.push_run import run_push
from fhirsync.testing.servers import NodeHandle

pytestmark = pytest.mark.browser


def _child_account(parent: NodeHandle, instance_id: str) -> None:
    _config, db = parent.open()
    try:
        with db.write() as conn:
            users.add(conn, instance_id, "child-password-1", "child", instance_id)
    finally:
        db.dispose()


def test_children_page_shows_pushes_and_flags_silent_children(
    page: Page, node_factory: NodeFactory
) -> None:
    parent = node_factory("parent")
    _child_account(parent, "clinic-a")
    _child_account(parent, "clinic-b")  # never connects
    child = node_factory(
        "clinic-a", parent=parent, parent_user="clinic-a", parent_password="child-password-1"
    )
    for n in range(2):
        put(child, patient(new_uuid(), f"Pushed {n}"))
    config, db = child.open()
    try:
        assert run_push(config, db).outcome == "ok"
    finally:
        db.dispose()

    log_in(page, parent.base_url, "admin", parent.admin_password)
    page.get_by_role("link", name="Children").click()
    active = page.locator("tr", has_text="clinic-a")
    expect(active).to_contain_text("active")
    expect(active.locator("td").nth(4)).to_contain_text("2")
    expect(active.locator("td").nth(3)).to_contain_text("UTC")
    silent = page.locator("tr", has_text="clinic-b")
    expect(silent).to_contain_text("never seen")
    screenshot(page, "children")
