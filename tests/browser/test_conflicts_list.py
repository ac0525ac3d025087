"""The Conflicts list when there are more open conflicts than it shows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in
from tests.conftest import NodeFactory

from fhirsync.store import conflicts
from fhirsync.store.conflicts import ConflictNote

pytestmark = pytest.mark.browser


def _note(n: int) -> ConflictNote:
    record = str(uuid.uuid4())

    def body(gender: str) -> bytes:
        return orjson.dumps({"resourceType": "Patient", "id": record, "gender": gender})

    return ConflictNote(
        "patient", record, "pull", body("unknown"), "active", body("female"), "active",
        body("male"), "active", str(n), ["gender"],
    )  # fmt: skip


def test_the_list_says_how_many_open_conflicts_it_leaves_out(
    page: Page, node_factory: NodeFactory
) -> None:
    # The page shows the 200 most recently updated conflicts and said nothing of the others:
    # with 203 open (the dashboard's count) it looked as if 200 were all there was.
    from fhirsync.server.routes.admin_conflicts import SHOWN

    node = node_factory("central")
    total = SHOWN + 3
    _config, db = node.open()
    try:
        with db.write() as conn:
            conflicts.record_many(conn, [_note(n) for n in range(total)], now=datetime.now(UTC))
    finally:
        db.dispose()
    log_in(page, node.base_url, "admin", node.admin_password)
    count = page.locator("#live a[href='/sync2/conflicts']")
    expect(count).to_have_text(str(total))
    count.click()
    expect(page.locator("#conflicts-shown")).to_contain_text(
        f"Showing the {SHOWN} most recently updated of {total} open conflicts"
    )
    expect(page.locator("tbody tr")).to_have_count(SHOWN)
