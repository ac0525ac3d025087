"""The Conflicts page in a real browser: review side by side, take the parent's value, resolve."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import log_in, screenshot
from tests.integration.conflict_support import edit, read

from fhirsync.store import conflicts as conflict_repo
from fhirsync.store import users
from fhirsync.testing.network import (
    Network,
    all_agree,
    build_network,
    create_patient,
    sync_until_quiet,
)
from fhirsync.testing.servers import NodeHandle

pytestmark = pytest.mark.browser

# Three levels: the conflict is met and resolved on the middle node, and the resolution must
# reach the parent above it and the grandchild below it.
TREE: tuple[tuple[str, str | None], ...] = (
    ("parent", None),
    ("child", "parent"),
    ("grandchild", "child"),
)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "net", TREE)
    yield network
    network.stop()


def conflicts_of(node: NodeHandle, status: str | None) -> list[conflict_repo.Conflict]:
    _config, db = node.open()
    try:
        with db.read() as conn:
            return conflict_repo.list_conflicts(conn, status=status)
    finally:
        db.dispose()


def manual_conflict(net: Network) -> tuple[str, conflict_repo.Conflict]:
    """Parent and child change ``gender`` differently; the child also changes ``birthDate``."""
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = create_patient(parent, "Mensah")
    sync_until_quiet(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, gender="other", birthDate="1991-01-01")
    sync_until_quiet(net)
    [conflict] = conflicts_of(child, conflict_repo.OPEN)
    return uuid, conflict


def test_take_remote_resolves_and_the_three_level_tree_converges(page: Page, net: Network) -> None:
    child = net.nodes["child"]
    uuid, conflict = manual_conflict(net)
    log_in(page, child.base_url, "admin", child.admin_password)
    expect(page.locator("#live")).to_contain_text("Open conflicts")
    expect(page.locator("#live a[href='/sync2/conflicts']")).to_have_text("1")
    page.get_by_role("link", name="Conflicts", exact=True).click()
    row = page.locator("tbody tr").first
    expect(row).to_contain_text(uuid)
    expect(row).to_contain_text("gender")
    row.get_by_role("link", name="Review").click()
    expect(page).to_have_url(re.compile(conflict.uuid))
    # Side by side: gender conflicts (red), birthDate only differs (changed here only).
    gender = page.locator("table.sides tr[data-path='gender']")
    expect(gender).to_have_class(re.compile("conflicting"))
    expect(gender).to_contain_text('"female"')
    expect(gender).to_contain_text('"other"')
    expect(gender).to_contain_text('"male"')
    expect(page.locator("table.sides tr[data-path='birthDate']")).to_have_class(
        re.compile("differs")
    )
    screenshot(page, "conflict-detail")
    page.get_by_label("Take remote for gender").check()
    page.get_by_role("button", name="Resolve").click()
    expect(page).to_have_url(re.compile(r"/sync2/conflicts$"))
    expect(page.get_by_role("status")).to_contain_text("resolved")
    expect(page.get_by_text("No open conflicts")).to_be_visible()

    sync_until_quiet(net)
    for node in net.nodes.values():
        body = read(node, uuid)
        assert (body["gender"], body["birthDate"]) == ("male", "1991-01-01"), node.instance_id
    assert all_agree(net)
    assert conflicts_of(child, conflict_repo.OPEN) == []
    [closed] = conflicts_of(child, conflict_repo.RESOLVED)
    assert closed.uuid == conflict.uuid and closed.resolved_by == "admin"
    assert closed.resolution == "merged"


def test_viewer_sees_no_resolve_button_and_cannot_post(page: Page, net: Network) -> None:
    child = net.nodes["child"]
    uuid, conflict = manual_conflict(net)
    _config, db = child.open()
    try:
        with db.write() as conn:
            users.add(conn, "watcher", "password-123", "viewer")
    finally:
        db.dispose()
    log_in(page, child.base_url, "watcher", "password-123")
    page.goto(f"{child.base_url}/sync2/conflicts/{conflict.uuid}")
    expect(page.locator("table.sides")).to_contain_text("gender")
    expect(page.get_by_role("button", name="Resolve")).to_have_count(0)
    expect(page.get_by_text("Only administrators can resolve")).to_be_visible()
    token = page.locator("input[name=csrf_token]").first.input_value()
    answer = page.request.post(
        f"{child.base_url}/sync2/conflicts/{conflict.uuid}/resolve",
        form={"csrf_token": token, "path-0": "gender", "choice-0": "remote"},
    )
    assert answer.status == 403
    assert [c.uuid for c in conflicts_of(child, conflict_repo.OPEN)] == [conflict.uuid]
    assert read(child, uuid)["gender"] == "other"


def test_edited_value_is_written_and_reaches_the_parent(page: Page, net: Network) -> None:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid, conflict = manual_conflict(net)
    log_in(page, child.base_url, "admin", child.admin_password)
    page.goto(f"{child.base_url}/sync2/conflicts/{conflict.uuid}")
    page.get_by_label("Edit value for gender").check()
    page.get_by_label("Value for gender", exact=True).fill(
        "unknown"
    )  # plain text is taken as a string
    page.get_by_role("button", name="Resolve").click()
    expect(page.get_by_role("status")).to_contain_text("resolved")
    sync_until_quiet(net)
    for node in (parent, child):
        body = read(node, uuid)
        assert (body["gender"], body["birthDate"]) == ("unknown", "1991-01-01"), node.instance_id
    assert all_agree(net)
    # The resolved conflict still shows, read only, with who resolved it.
    page.goto(f"{child.base_url}/sync2/conflicts/{conflict.uuid}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("resolved")
    expect(page.get_by_text("by admin")).to_be_visible()
    expect(page.get_by_role("button", name="Resolve")).to_have_count(0)
