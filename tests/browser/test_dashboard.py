"""The dashboard as an administrator first sees it: a node right after ``fhirsync init``."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in
from tests.conftest import NodeFactory
from tests.integration.failure_support import parked_failure

from fhirsync.testing.proxy import FaultProxy

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


def test_a_dismissed_record_is_not_reported_as_the_last_failure(
    page: Page, node_factory: NodeFactory
) -> None:
    # The dismissal is kept as the newest (failed) PULL row, so once the administrator had
    # dealt with the failure the Last pull card said "Last record failed: patient", in red.
    node = node_factory("central")
    parked_failure(node, "pull")
    log_in(page, node.base_url, "admin", node.admin_password)
    expect(page.locator("#live")).to_contain_text("Last record failed: patient")
    page.get_by_role("link", name="Failed records").click()
    page.get_by_label("Reason for dismissing").fill("duplicate of another patient")
    page.get_by_role("button", name="Dismiss").click()
    expect(page.get_by_role("status")).to_contain_text("Dismissed patient")
    page.get_by_role("link", name="Dashboard").click()
    live = page.locator("#live")
    expect(live).to_contain_text("Last record dismissed: patient")
    expect(live).not_to_contain_text("Last record failed")
    # Its details say the same.
    live.get_by_role("link", name="details").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("dismissed")
    expect(page.get_by_role("heading", level=1)).not_to_contain_text("failed")


def test_the_dashboard_says_when_its_live_part_cannot_be_refreshed(
    page: Page, node_factory: NodeFactory
) -> None:
    # The live part refreshes every 10 s. When the node stopped answering (or answered 503,
    # its database down) htmx kept the old figures, "Reachable" included, with no sign of it.
    node = node_factory("central")
    with FaultProxy("127.0.0.1", node.port) as proxy:
        page.clock.install()
        log_in(page, proxy.base_url, "admin", node.admin_password)
        note = page.get_by_text("could not be refreshed")
        expect(note).to_be_hidden()
        proxy.refuse()
        page.clock.run_for(11_000)
        expect(note).to_be_visible()
        proxy.heal()
        page.clock.run_for(11_000)
        expect(note).to_be_hidden()
