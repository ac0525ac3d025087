"""Pull features against real nodes on 127.0.0.1: filters, a plug-in client, duplicate events, the
``fhirsync pull`` exit codes, and a child on PostgreSQL.

Every check compares what the child holds (uuids and content hashes) or what its own event log
says, so "applied once" means one CREATED event per record, not just a count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from tests.conftest import NodeFactory
from tests.contract.example_plugin import NAME as ONE_BY_ONE
from tests.contract.example_plugin import OneByOneClient
from tests.integration.pull_support import (
    cli,
    edit_sync2,
    event_actions,
    held,
    new_uuid,
    patient,
    pull,
    put,
    save_sync2,
    write_raw,
)

from fhirsync.categories import Category
from fhirsync.clients.base import FetchResult, RecordRef, SourceClient
from fhirsync.clients.registry import ClientContext, register_factory, unregister_factory
from fhirsync.testing.javafeed import JavaEvent, JavaFeedServer
from fhirsync.testing.proxy import FaultProxy
from fhirsync.testing.servers import NodeHandle


def location(uuid: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Location", "id": uuid, "name": name, "status": "active"}


@pytest.fixture
def family(node_factory: NodeFactory) -> tuple[NodeHandle, NodeHandle]:
    parent = node_factory("parent")
    child = node_factory("child", parent=parent, start=False)
    return parent, child


# --- filters -----------------------------------------------------------------------------------


def test_a_disabled_category_is_not_pulled(family: tuple[NodeHandle, NodeHandle]) -> None:
    parent, child = family
    patients = [new_uuid() for _ in range(3)]
    for n, uuid in enumerate(patients):
        put(parent, patient(uuid, f"Family{n}"))
    put(parent, location(new_uuid(), "Ward A"))
    data = edit_sync2(child)
    for cls in data["pull"]["classes"]:
        if cls["category"].lower() == "location":
            cls["enabled"] = False
    save_sync2(child, data)
    result = pull(child)
    assert result.outcome == "ok", result
    assert set(held(child)) == {("patient", u) for u in patients}


def test_own_origin_entries_are_skipped(family: tuple[NodeHandle, NodeHandle]) -> None:
    parent, child = family
    mine, theirs = new_uuid(), new_uuid()
    # A change that began on the child (pushed up earlier) comes back in the parent's feed with
    # the child as origin: the child must not apply its own change again (no echo).
    write_raw(parent, "patient", [patient(mine, "Mine")], origin=child.instance_id)
    write_raw(parent, "patient", [patient(theirs, "Theirs")], origin=parent.instance_id)
    result = pull(child)
    assert result.outcome == "ok", result
    assert set(held(child)) == {("patient", theirs)}
    assert result.events_read == 2


def test_location_filter_tags_against_the_location_setting(node_factory: NodeFactory) -> None:
    kumasi, accra, untagged = new_uuid(), new_uuid(), new_uuid()
    feed = [
        JavaEvent("patient", kumasi, location_filter="Ghana%Ashanti%Kumasi%Central%Ward 1"),
        JavaEvent("patient", accra, location_filter="Ghana%Greater Accra%Accra%Osu%Ward 2"),
        JavaEvent("patient", untagged),
    ]
    bodies = [patient(u, f"P{n}") for n, u in enumerate((kumasi, accra, untagged))]
    with JavaFeedServer(feed, fhir=bodies).start() as java:
        child = node_factory(
            "child", start=False, extra_settings={"location_filter": "ghana%ashanti%*%*%*"}
        )
        edit_sync2(child, parentFeedLocation=java.base_url)
        result = pull(child)
    assert result.outcome == "ok", result
    assert {u for (_c, u) in held(child)} == {kumasi, untagged}


# --- the same event twice ----------------------------------------------------------------------


def test_the_same_event_twice_is_applied_once(node_factory: NodeFactory) -> None:
    uuids = [new_uuid() for _ in range(6)]
    feed = [JavaEvent("patient", u) for u in uuids]
    # Once within a page (page 2 repeats its own entry) and once across pages (page 1's first
    # entry again on page 2), as a Java publisher re-chunking its pages does.
    feed += [feed[5], feed[0]]
    with JavaFeedServer(feed, fhir=[patient(u, "Twice") for u in uuids]).start() as java:
        child = node_factory("child", start=False)
        edit_sync2(child, parentFeedLocation=java.base_url)
        result = pull(child)
    assert result.outcome == "ok", result
    assert result.events_read == 8
    assert event_actions(child) == {u: ["CREATED"] for u in uuids}


# --- a plug-in client --------------------------------------------------------------------------


class CountingClient:
    """The contract suite's one-record-per-request client, counting what it fetched."""

    name = ONE_BY_ONE
    fetched: list[str] = []

    def __init__(self, inner: OneByOneClient) -> None:
        self.inner = inner

    def supports(self, category: Category) -> bool:
        return self.inner.supports(category)

    def fetch(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        CountingClient.fetched.extend(r.uuid for r in refs)
        return self.inner.fetch(category, refs)

    def send(self, category: Category, changes: Sequence[Any], *, origin: str | None = None) -> Any:
        return self.inner.send(category, changes, origin=origin)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def plugin() -> Iterator[type[CountingClient]]:
    def make(ctx: ClientContext) -> SourceClient:
        return CountingClient(OneByOneClient(ctx.http_client()))  # type: ignore[return-value]

    CountingClient.fetched = []
    register_factory(ONE_BY_ONE, make)
    yield CountingClient
    unregister_factory(ONE_BY_ONE)


def test_a_plug_in_client_fetches_the_category_that_prefers_it(
    family: tuple[NodeHandle, NodeHandle], plugin: type[CountingClient]
) -> None:
    parent, child = family
    patients = [new_uuid() for _ in range(3)]
    for n, uuid in enumerate(patients):
        put(parent, patient(uuid, f"Plug{n}"))
    put(parent, location(loc := new_uuid(), "Ward P"))
    data = edit_sync2(child)
    for cls in data["pull"]["classes"]:
        if cls["category"].lower() == "patient":
            cls["preferredClient"] = ONE_BY_ONE
    save_sync2(child, data)
    result = pull(child)
    assert result.outcome == "ok", result
    # Patients came through the plug-in, the location through the built-in FHIR client.
    assert sorted(plugin.fetched) == sorted(patients)
    assert held(child) == held(parent)
    assert ("location", loc) in held(child)


# --- exit codes --------------------------------------------------------------------------------


def test_pull_exit_codes(node_factory: NodeFactory) -> None:
    parent = node_factory("parent")
    put(parent, patient(new_uuid(), "Exit"))
    with FaultProxy("127.0.0.1", parent.port) as proxy:
        via_proxy = NodeHandle(parent.node_dir, "parent", proxy.port, parent.admin_password)
        child = node_factory("child", parent=via_proxy, start=False)
        orphan = node_factory("orphan", start=False)

        ok = cli("pull", str(child.node_dir))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "1 records applied" in ok.stdout

        # One record the parent holds but that is not valid FHIR: recorded as a failure.
        write_raw(parent, "patient", [{**patient(new_uuid(), "Bad"), "gender": "robot"}], "parent")
        failed = cli("pull", str(child.node_dir))
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "1 failed" in failed.stdout

        none = cli("pull", str(orphan.node_dir))
        assert none.returncode == 2, none.stdout + none.stderr
        assert "parentFeedLocation" in none.stderr

        proxy.refuse()
        down = cli("pull", str(child.node_dir))
        assert down.returncode == 3, down.stdout + down.stderr
        assert "unreachable" in down.stderr


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_child_on_the_test_database_pulls_and_resumes(node_factory: NodeFactory) -> None:
    # With FHIRSYNC_TEST_DB=postgresql both nodes live on PostgreSQL (db_url_factory).
    parent = node_factory("parent", extra_settings={"feed_page_size": 4})
    first = [new_uuid() for _ in range(10)]
    for n, uuid in enumerate(first):
        put(parent, patient(uuid, f"Pg{n}"))
    child = node_factory("child", parent=parent, start=False)
    assert pull(child).applied == 10
    second = [new_uuid() for _ in range(5)]
    for n, uuid in enumerate(second):
        put(parent, patient(uuid, f"PgMore{n}"))
    put(parent, patient(first[0], "Pg-renamed"))
    again = pull(child)
    assert (again.outcome, again.applied) == ("ok", 6)
    assert held(child) == held(parent)
    assert event_actions(child)[first[0]] == ["CREATED", "UPDATED"]
