"""The audit list's filter form in a real browser."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in
from tests.conftest import NodeFactory
from tests.integration.test_admin_pages import insert_messages

pytestmark = pytest.mark.browser


def test_an_origin_with_spaces_can_be_chosen_in_the_filter(
    page: Page, node_factory: NodeFactory
) -> None:
    # The options carried no value, so the browser sent their text with the spaces collapsed
    # and trimmed: choosing a child whose instance id has a trailing or double space matched
    # nothing ("No audit message matches these filters") although its messages were there.
    node = node_factory("central")
    (reported,) = insert_messages(node, 1, creator_instance_id="clinic  north ")
    (own,) = insert_messages(node, 1)
    log_in(page, node.base_url, "admin", node.admin_password)
    page.goto(f"{node.base_url}/sync2/audit")
    page.get_by_label("Origin node").select_option(index=2)
    page.get_by_role("button", name="Show").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator(f"tbody a[href='/sync2/audit/{reported}']")).to_have_count(1)
    expect(page.locator(f"tbody a[href='/sync2/audit/{own}']")).to_have_count(0)
