"""The Configuration page when two tabs (or two administrators) edit ``sync2.json`` at once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in
from tests.conftest import NodeFactory

pytestmark = pytest.mark.browser


def _edit(page: Page, section: str, **values: Any) -> None:
    contents = page.get_by_label("Contents")
    data = json.loads(contents.input_value())
    data[section].update(values)
    contents.fill(json.dumps(data, indent=2))
    page.get_by_role("button", name="Check and save").click()


def test_a_stale_tab_does_not_undo_a_change_saved_meanwhile(
    page: Page, node_factory: NodeFactory
) -> None:
    # Both tabs showed the same file. The second save wrote its whole (old) text back, silently
    # undoing the first tab's change: here the pull schedule went back to what it was.
    node = node_factory("central")
    sync2 = node.node_dir / "sync2.json"
    log_in(page, node.base_url, "admin", node.admin_password)
    page.goto(f"{node.base_url}/sync2/config")
    other = page.context.new_page()
    other.goto(f"{node.base_url}/sync2/config")
    _edit(other, "pull", schedule=600)
    expect(other.get_by_role("status")).to_contain_text("Configuration saved")

    _edit(page, "push", schedule=900)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("changed since this page was shown")
    expect(alert).to_contain_text("Nothing was changed")
    saved = json.loads(sync2.read_text())
    assert saved["pull"]["schedule"] == 600
    assert saved["push"]["schedule"] != 900
    # The form now holds the current file (with the other tab's change), the refused text is
    # still there to copy from, and saving again from here works.
    expect(page.get_by_text('"schedule": 900')).to_be_visible()
    _edit(page, "push", schedule=900)
    expect(page.get_by_role("status")).to_contain_text("Configuration saved")
    saved = json.loads(sync2.read_text())
    assert (saved["pull"]["schedule"], saved["push"]["schedule"]) == (600, 900)
