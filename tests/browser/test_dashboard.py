"""The dashboard as an administrator first sees it: a node right after ``fhirsync init``."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in
from tests.conftest import NodeFactory

pytestmark = pytest.mark.browser


def test_a_node_without_a_parent_lists_no_lag_it_cannot_have(
    page: Page, node_factory: NodeFactory
) -> None:
    # The top of the tree pulls from and pushes to nobody. Its dashboard listed every category
    # (thirty rows) as "unknown" behind the parent and "not pushed", then "The other 0
    # categories are up to date": a fresh node looked as if everything needed attention.
    root = node_factory("root")
    log_in(page, root.base_url, "admin", root.admin_password)
    live = page.locator("#live")
    expect(live).to_contain_text("No parent configured")
    expect(live).not_to_contain_text("Lag per category")
    expect(live.locator("td", has_text="unknown")).to_have_count(0)
    expect(live).not_to_contain_text("The other 0 categories")
