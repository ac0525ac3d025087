"""The dashboard's activity chart counts records: its scale shows whole numbers only."""

from __future__ import annotations

import re
import uuid

import pytest
from tests.integration.api_support import admin_pages
from tests.integration.test_admin_pages import insert_messages

from fhirsync.testing.servers import NodeHandle


def _y_ticks(dashboard: str) -> list[str]:
    axis = re.search(r'<g class="axis y[^"]*">(.*?)</g></g>', dashboard, re.S)
    assert axis, "the dashboard has no chart with a y axis"
    return re.findall(r"<text[^>]*>([^<]*)</text>", axis.group(1))


@pytest.mark.parametrize("synced", [0, 3, 47])
def test_the_activity_scale_has_whole_numbers(node: NodeHandle, synced: int) -> None:
    # pygal's automatic scale divided small counts into tenths: "0.2, 0.4, ... 2.8" records.
    if synced:
        insert_messages(node, synced, minutes_ago=5, success=True, record_uuid=str(uuid.uuid4()))
    with admin_pages(node) as client:
        ticks = _y_ticks(client.get("/sync2/").text)
    assert ticks, "the chart's scale has no labels"
    assert all(t.isdigit() for t in ticks), ticks
    assert len(ticks) <= 12, ticks
