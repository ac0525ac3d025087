"""A conflict's audit message leads to the conflict, not to a Retry that cannot resolve it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in
from tests.integration.conflict_support import PAIR, edit, open_conflicts

from fhirsync.testing.network import Network, build_network, create_patient, sync_until_quiet

pytestmark = pytest.mark.browser


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "net", PAIR)
    yield network
    network.stop()


def test_a_conflict_message_links_to_its_conflict_and_is_not_retried(
    page: Page, net: Network
) -> None:
    # The audit row of a conflict is a failed PULL of this node, so its page offered Retry; a
    # retry pulled nothing new and answered "Retry succeeded." while the conflict stayed open.
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_patient(parent, "Mensah")
    sync_until_quiet(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, gender="other")
    sync_until_quiet(net)
    [conflict] = open_conflicts(child)

    log_in(page, child.base_url, "admin", child.admin_password)
    page.goto(f"{child.base_url}/sync2/audit?status=FAILURE&record={uuid}")
    row = page.locator("tr", has_text="Conflict").first
    row.get_by_role("link", name="Details").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("conflict")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    page.get_by_role("link", name="Resolve it on the Conflicts page").click()
    expect(page).to_have_url(f"{child.base_url}/sync2/conflicts/{conflict.uuid}")

    # A hand-made post (an older page) is refused with the same pointer, and changes nothing.
    page.go_back()
    message = page.url.rsplit("/", 1)[1]
    token = page.locator("input[name=csrf_token]").first.input_value()
    answer = page.request.post(
        f"{child.base_url}/sync2/audit/{message}/retry",
        form={"csrf_token": token},
        max_redirects=0,
    )
    assert answer.status == 303
    page.reload()
    expect(page.get_by_role("status")).to_contain_text("Conflicts page")
    expect(page.get_by_role("status")).not_to_contain_text("succeeded")
    assert [c.uuid for c in open_conflicts(child)] == [conflict.uuid]
