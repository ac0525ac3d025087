"""Retry on the Failed records and audit pages when no retry can run."""

from __future__ import annotations

import re

import pytest
from tests.integration.api_support import add_user, admin_pages, post_form
from tests.integration.failure_support import parked_failure

from fhirsync.store import failures
from fhirsync.testing.servers import NodeHandle


def _status(node: NodeHandle, failure_id: int) -> str:
    _config, db = node.open()
    try:
        with db.read() as conn:
            found = failures.get(conn, failure_id)
    finally:
        db.dispose()
    assert found is not None
    return found.status


def _flash(client: object, response: object) -> str:
    page = client.get(response.headers["location"]).text  # type: ignore[attr-defined]
    found = re.search(r'class="flash error"[^>]*>(.*?)</p>', page, re.S)
    assert found, "no error message on the page"
    return found.group(1)


@pytest.mark.parametrize("operation", ["pull", "push"])
@pytest.mark.parametrize("where", ["failures", "audit", "audit-all"])
def test_retry_without_a_parent_says_so_and_leaves_the_failure_parked(
    node: NodeHandle, operation: str, where: str
) -> None:
    # A node moved to the top of its tree keeps the failures of its old parent. Retry answered
    # "Retry not done" yet gave the failure a fresh set of tries: it left the parked count and
    # showed "Will be retried automatically", which no run would ever do.
    failure_id, message = parked_failure(node, operation)
    with admin_pages(node) as client:
        if where == "failures":
            answer = post_form(client, "/sync2/failures", f"/sync2/failures/{failure_id}/retry")
        elif where == "audit":
            answer = post_form(client, f"/sync2/audit/{message}", f"/sync2/audit/{message}/retry")
        else:
            answer = post_form(client, "/sync2/audit", "/sync2/audit/retry-failed")
        assert answer.status_code == 303
        assert "No parent is configured" in _flash(client, answer)
    assert _status(node, failure_id) == "parked"


def test_only_administrators_are_told_why_retry_is_off(node: NodeHandle) -> None:
    # A viewer, who has no Retry button at all, got the red "Retry is not possible now" note.
    parked_failure(node, "pull")
    add_user(node, "watcher", "viewer")
    with admin_pages(node) as admin:
        assert "Retry is not possible now" in admin.get("/sync2/failures").text
    with admin_pages(node, "watcher", "watcher-password") as viewer:
        assert "Retry is not possible now" not in viewer.get("/sync2/failures").text
