"""Conflicts resolved, refreshed and closed at the same moment from different places."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.integration.api_support import admin_pages, post_form
from tests.integration.conflict_support import (
    PAIR,
    audit_actions,
    conflict_of,
    edit,
    open_conflicts,
    read,
)
from tests.integration.test_push_faults import shared

from fhirsync.errors import RecordNotFound
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store.engine import Database
from fhirsync.sync import resolve as resolving
from fhirsync.sync.reconcile import reconciler_for
from fhirsync.testing.network import Network, build_network, sync_until_quiet


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "net", PAIR)
    yield network
    network.stop()


def gender_conflict(net: Network) -> tuple[str, conflict_repo.Conflict]:
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = shared(net)
    edit(parent, uuid, gender="male")
    edit(child, uuid, gender="other")
    sync_until_quiet(net)
    [conflict] = open_conflicts(child)
    return uuid, conflict


def test_two_resolutions_of_one_conflict_at_once_let_one_win(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI and the admin page resolve the same conflict at the same moment: one wins and the
    other is told it did not (before, both reported success and the second overwrote the
    first, two RESOLVED audit rows saying different things)."""
    child = net.nodes["child"]
    uuid, conflict = gender_conflict(net)
    # Both resolutions pass the "still open?" check before either writes (the race).
    both_checked = threading.Barrier(2, timeout=20)
    real_still_open = resolving._still_open

    def still_open(db: Database, conflict_uuid: str) -> conflict_repo.Conflict:
        found = real_still_open(db, conflict_uuid)
        both_checked.wait()
        return found

    monkeypatch.setattr(resolving, "_still_open", still_open)
    cli_outcome: list[str] = []

    def by_cli() -> None:  # what `fhirsync conflicts resolve --take local` calls
        config, db = child.open()
        try:
            resolving.resolve(
                db, reconciler_for(config), conflict.uuid, resolved_by="cli", take="local"
            )
            cli_outcome.append("local")
        except RecordNotFound:
            cli_outcome.append("refused")
        finally:
            db.dispose()

    thread = threading.Thread(target=by_cli)
    thread.start()
    page = f"/sync2/conflicts/{conflict.uuid}"
    with admin_pages(child) as client:
        answer = post_form(
            client, page, f"{page}/resolve", **{"path-0": "gender", "choice-0": "remote"}
        )
        flash = client.get(answer.headers["location"]).text
    thread.join(30)
    admin_won = "resolved" in flash and "Not resolved" not in flash
    assert cli_outcome == ["refused" if admin_won else "local"]
    done = conflict_of(child, conflict.uuid)
    assert (done.status, done.resolved_by) == ("resolved", "admin" if admin_won else "cli")
    assert read(child, uuid)["gender"] == ("male" if admin_won else "other")
    assert audit_actions(child, uuid).count("RESOLVED") == 1


def test_the_sync2_resolve_endpoint_waits_for_the_database_off_the_event_loop(
    net: Network,
) -> None:
    """A resolution posted while another writer holds the database waits for it without
    stopping the node: before, it waited on the server's event loop, and every other request
    (health checks, feeds, pushes from children) hung until the database was free."""
    child = net.nodes["child"]
    _uuid, conflict = gender_conflict(net)
    config, db = child.open()
    db.dispose()
    assert config.db_url.startswith("sqlite:///")
    holder = sqlite3.connect(config.db_url.removeprefix("sqlite:///"))
    holder.execute("BEGIN IMMEDIATE")  # another writer, mid-transaction
    answers: list[int] = []

    def post() -> None:
        with child.client() as client:
            answer = client.post(
                "/ws/rest/sync2/conflict/resolve",
                params={"conflictUuid": conflict.uuid},
                json=conflict.local(),
            )
            answers.append(answer.status_code)

    thread = threading.Thread(target=post)
    try:
        thread.start()
        with httpx.Client(base_url=child.base_url, timeout=2.0) as client:
            for _ in range(10):  # the resolution is waiting for the database meanwhile
                assert client.get("/health").status_code == 200
                assert answers == []
    finally:
        holder.rollback()
        holder.close()
        thread.join(60)
    assert answers == [202]
    assert open_conflicts(child) == []
