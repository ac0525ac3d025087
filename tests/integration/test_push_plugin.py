"""Push through a plug-in client: a category whose ``preferredClient`` is a plug-in is sent with
that plug-in's ``send``, stamped with each change's first origin; other categories are not."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
from tests.contract.example_plugin import NAME, OneByOneClient
from tests.integration.pull_support import edit_sync2, save_sync2
from tests.integration.test_push import (
    FHIR,
    add_child_account,
    create_patients,
    make_pair,
    patient,
    push,
    snapshot,
    store_invalid_patient,
)

from fhirsync.categories import Category
from fhirsync.clients.base import FetchResult, OutgoingChange, RecordRef, SendResult, SourceClient
from fhirsync.clients.registry import ClientContext, register_factory, unregister_factory
from fhirsync.testing.servers import NodeHandle

NodeFactory = Callable[..., NodeHandle]


class RecordingClient:
    """The contract suite's one-record-per-request client, recording every send."""

    name = NAME
    sends: list[tuple[str, str | None, list[str]]] = []

    def __init__(self, inner: OneByOneClient) -> None:
        self.inner = inner

    def supports(self, category: Category) -> bool:
        return self.inner.supports(category)

    def fetch(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        return self.inner.fetch(category, refs)

    def send(
        self, category: Category, changes: Sequence[OutgoingChange], *, origin: str | None = None
    ) -> SendResult:
        RecordingClient.sends.append((category.name, origin, [c.uuid for c in changes]))
        return self.inner.send(category, changes, origin=origin)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def plugin() -> Iterator[type[RecordingClient]]:
    def make(ctx: ClientContext) -> SourceClient:
        return RecordingClient(OneByOneClient(ctx.http_client()))

    RecordingClient.sends = []
    register_factory(NAME, make)
    yield RecordingClient
    unregister_factory(NAME)


def _prefer(node: NodeHandle, category: str, client: str) -> None:
    data = edit_sync2(node)
    for cls in data["push"]["classes"]:
        if cls["category"].lower() == category:
            cls["preferredClient"] = client
    save_sync2(node, data)


def _location(name: str) -> dict[str, Any]:
    return {"resourceType": "Location", "name": name, "status": "active"}


def test_a_category_that_prefers_a_plug_in_is_pushed_through_it(
    node_factory: NodeFactory, plugin: type[RecordingClient]
) -> None:
    parent, child = make_pair(node_factory)
    _prefer(child, "patient", NAME)
    mine = create_patients(child, 3)
    relayed, ward = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    # A change this child relays for a node below it keeps that node as its origin.
    add_child_account(child, "clinic-far", "clinic-far-password")
    with httpx.Client(base_url=child.base_url, auth=("clinic-far", "clinic-far-password")) as far:
        answer = far.put(f"{FHIR}/Patient/{relayed}", json=patient("Relayed", id=relayed))
        assert answer.status_code == 201, answer.text
    with child.client() as client:
        answer = client.put(f"{FHIR}/Location/{ward}", json={**_location("Ward"), "id": ward})
        assert answer.status_code == 201, answer.text

    first = push(child)
    assert (first.outcome, first.applied) == ("ok", 5), first
    sent = {(category, origin): sorted(uuids) for category, origin, uuids in plugin.sends}
    # Patients went through the plug-in, one call per origin; the location did not.
    assert sent == {("patient", "child-a"): sorted(mine), ("patient", "clinic-far"): [relayed]}
    held = snapshot(parent)
    local = snapshot(child)
    for uuid in mine:
        assert held[uuid][:3] == (local[uuid][0], "active", "child-a")
    assert held[relayed][:3] == (local[relayed][0], "active", "clinic-far")
    assert held[ward][:3] == (local[ward][0], "active", "child-a")

    plugin.sends.clear()
    with child.client() as client:
        assert client.delete(f"{FHIR}/Patient/{mine[0]}").status_code == 204
    second = push(child)
    assert (second.outcome, second.applied) == ("ok", 1), second
    assert plugin.sends == [("patient", "child-a", [mine[0]])]
    assert snapshot(parent)[mine[0]][1] == "voided"


def test_a_plug_in_that_cannot_send_a_category_leaves_it_to_the_built_in_clients(
    node_factory: NodeFactory, plugin: type[RecordingClient]
) -> None:
    # The example plug-in speaks FHIR only: a REST category that prefers it goes over REST.
    parent, child = make_pair(node_factory)
    _prefer(child, "visittype", NAME)
    uuid = str(uuidlib.uuid4())
    with child.client() as client:
        answer = client.post(
            "/ws/rest/v1/visittype", json={"uuid": uuid, "name": "Outreach", "description": "x"}
        )
        assert answer.status_code == 201, answer.text
    finished = push(child)
    assert (finished.outcome, finished.applied) == ("ok", 1), finished
    assert plugin.sends == []
    assert snapshot(parent)[uuid][1:3] == ("active", "child-a")


def test_a_parent_down_stops_a_plug_in_push_and_the_next_run_sends_it_once(
    node_factory: NodeFactory, plugin: type[RecordingClient]
) -> None:
    parent, child = make_pair(node_factory)
    _prefer(child, "patient", NAME)
    mine = create_patients(child, 3)
    parent.stop()
    down = push(child)
    assert down.outcome == "unreachable", down
    assert plugin.sends and not down.applied  # it tried, and the marker stayed
    parent.start()
    plugin.sends.clear()
    again = push(child)
    assert (again.outcome, again.applied) == ("ok", 3), again
    assert sorted(u for _c, _o, uuids in plugin.sends for u in uuids) == sorted(mine)
    held = snapshot(parent)
    assert {u: held[u][1] for u in mine} == dict.fromkeys(mine, "active")
    assert push(child).events_read == 0


def test_with_continue_on_failure_off_a_plug_in_sends_nothing_after_a_refused_record(
    node_factory: NodeFactory, plugin: type[RecordingClient]
) -> None:
    # A plug-in's send promises nothing about the changes after a refused one: in order, they
    # go one at a time, and stop there.
    parent, child = make_pair(node_factory, continue_on_failure=False)
    _prefer(child, "patient", NAME)
    before = create_patients(child, 2)
    bad = store_invalid_patient(child)
    later = create_patients(child, 2)
    finished = push(child)
    assert (finished.outcome, finished.applied, finished.failures) == ("failures", 2, 1)
    assert set(snapshot(parent)) == set(before)
    assert [uuids for _c, _o, uuids in plugin.sends] == [[u] for u in [*before, bad]]
    assert set(later).isdisjoint(snapshot(parent))
