"""The audit list's time filters as an administrator types them."""

from __future__ import annotations

from tests.integration.api_support import admin_pages
from tests.integration.test_admin_pages import insert_messages

from fhirsync.testing.servers import NodeHandle


def test_a_from_time_after_the_until_time_is_named_not_an_empty_list(node: NodeHandle) -> None:
    # Swapped dates matched nothing: "No audit message matches these filters", as if the log
    # held nothing for that period.
    (message,) = insert_messages(node, 1)
    with admin_pages(node) as client:
        listing = client.get("/sync2/audit?since=2026-03-01T00:00&until=2026-02-01T00:00").text
    assert "is after" in listing
    assert message in listing


def test_an_empty_log_is_not_blamed_on_the_filters(node: NodeHandle) -> None:
    # Right after init the unfiltered list said "No audit message matches these filters".
    with admin_pages(node) as client:
        empty = client.get("/sync2/audit").text
        filtered = client.get("/sync2/audit?status=FAILURE").text
    assert "No audit messages yet" in empty
    assert "matches these filters" not in empty
    assert "No audit message matches these filters" in filtered
