"""Pull end to end: a child runs ``run_pull`` against a real parent node (and a Java-style feed).

What the child holds afterwards is compared with the parent record by record (uuid, category,
content hash, state), so the seams between the feed reader, the client facade, the FHIR and REST
clients and the engine are all exercised together.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import delete, select
from tests.conftest import NodeFactory
from tests.integration.pull_support import FHIR, Held, cli, held, new_uuid, patient, pull, put

from fhirsync import categories
from fhirsync.store.tables import markers, records
from fhirsync.sync.runner import run_pull
from fhirsync.sync.status import RunEvent, RunProgress
from fhirsync.testing.javafeed import JavaEvent, JavaFeedServer
from fhirsync.testing.network import event_count
from fhirsync.testing.proxy import FaultProxy
from fhirsync.testing.servers import NodeHandle

REST = "/ws/rest/v1"


def expected_on_child(parent: Held) -> Held:
    """The parent's active records: what a child that pulled everything holds of them (a record
    voided before its first pull arrives voided, one purged before it is not copied)."""
    return {k: v for k, v in parent.items() if v[1] == "active"}


def location(uuid: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Location", "id": uuid, "name": name, "status": "active"}


def observation(uuid: str, subject: str, kg: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": uuid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{subject}"},
        "effectiveDateTime": "2024-03-01T10:00:00+00:00",
        "valueQuantity": {
            "value": kg,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


def rest(node: NodeHandle, method: str, path: str, **kwargs: Any) -> None:
    with node.client() as client:
        response = client.request(method, f"{REST}{path}", **kwargs)
        assert response.status_code < 300, response.text


def fhir_delete(node: NodeHandle, path: str) -> None:
    with node.client() as client:
        response = client.delete(f"{FHIR}{path}")
        assert response.status_code < 300, response.text


@pytest.fixture
def family(node_factory: NodeFactory) -> tuple[NodeHandle, NodeHandle]:
    parent = node_factory("parent")
    child = node_factory("child", parent=parent, start=False)
    return parent, child


# --- a real parent ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_child_holds_exactly_the_parents_records(family: tuple[NodeHandle, NodeHandle]) -> None:
    parent, child = family
    ids = {name: new_uuid() for name in ("p1", "p2", "p3", "loc1", "loc2", "obs1", "rel")}
    # First round: creates and updates over FHIR and REST.
    for key, family_name in (("p1", "Mensah"), ("p2", "Owusu"), ("p3", "Boateng")):
        put(parent, patient(ids[key], family_name))
    put(parent, location(ids["loc1"], "Ward A"))
    put(parent, location(ids["loc2"], "Ward B"))
    put(parent, observation(ids["obs1"], ids["p1"], 61.5))
    put(parent, {**patient(ids["p1"], "Mensah-Addo")})  # UPDATED
    rest(
        parent,
        "POST",
        "/concept",
        json={"uuid": "concept-1", "name": "Weight (kg)", "version": "1.0"},
    )
    rest(parent, "POST", "/concept/concept-1", json={"version": "1.1"})  # UPDATED
    rest(parent, "POST", "/visittype", json={"uuid": "vt-1", "name": "Outpatient"})
    rest(parent, "POST", "/drug", json={"uuid": "drug-1", "name": "Paracetamol", "concept": "c1"})
    rest(
        parent,
        "POST",
        "/relationship",
        json={
            "uuid": ids["rel"],
            "personA": "person-a",
            "personB": "person-b",
            "relationshipType": "8d91a210-c2cc-11de-8d13-0010c6dffd0f",
        },
    )
    first = pull(child)
    assert first.outcome == "ok", first
    assert held(child) == expected_on_child(held(parent))

    # Second round: every other action type.
    fhir_delete(parent, f"/Patient/{ids['p2']}")  # VOIDED
    fhir_delete(parent, f"/Location/{ids['loc2']}")  # RETIRED
    rest(parent, "DELETE", "/concept/concept-1")  # RETIRED ...
    rest(parent, "POST", "/concept/concept-1", json={"retired": False})  # ... UNRETIRED
    rest(parent, "DELETE", "/drug/drug-1", params={"purge": "true"})  # DELETED
    rest(parent, "DELETE", f"/relationship/{ids['rel']}")  # VOIDED ...
    rest(parent, "POST", f"/relationship/{ids['rel']}", json={"voided": False})  # ... UNVOIDED
    put(parent, observation(ids["obs1"], ids["p1"], 62.0))  # UPDATED
    second = pull(child)
    assert second.outcome == "ok", second
    on_parent, on_child = held(parent), held(child)
    assert {k: v for k, v in on_child.items() if v[1] == "active"} == expected_on_child(on_parent)
    assert on_child[("patient", ids["p2"])][1] == "voided"
    assert on_child[("location", ids["loc2"])][1] == "retired"
    assert on_child[("concept", "concept-1")] == on_parent[("concept", "concept-1")]
    assert on_child[("relationship", ids["rel"])] == on_parent[("relationship", ids["rel"])]
    assert ("drug", "drug-1") not in on_parent or on_parent[("drug", "drug-1")][1] == "deleted"
    assert on_child.get(("drug", "drug-1"), ("", "deleted"))[1] == "deleted"

    # A third run finds nothing new and writes nothing.
    count = event_count(child)
    third = pull(child)
    assert (third.outcome, third.events_read, third.applied) == ("ok", 0, 0)
    assert event_count(child) == count


def test_the_same_events_read_twice_change_nothing(family: tuple[NodeHandle, NodeHandle]) -> None:
    parent, child = family
    for n in range(3):
        put(parent, patient(new_uuid(), f"Family{n}"))
    rest(parent, "POST", "/visittype", json={"uuid": "vt-2", "name": "Inpatient"})
    assert pull(child).applied == 4
    before, count = held(child), event_count(child)
    # Lose every marker: the whole feed is read again, and applying it again is a no-op.
    _config, db = child.open()
    try:
        with db.write() as conn:
            conn.execute(delete(markers))
    finally:
        db.dispose()
    again = pull(child)
    assert again.outcome == "ok" and again.events_read >= 4
    assert held(child) == before
    assert event_count(child) == count


@pytest.mark.parametrize("fault", ["cut mid-stream", "refused"])
def test_parent_lost_mid_run_keeps_the_marker_and_a_rerun_completes(
    node_factory: NodeFactory, fault: str
) -> None:
    # Pages of 5 entries: the parent is lost after the first of 6 pages has been committed.
    parent = node_factory("parent", extra_settings={"feed_page_size": 5})
    patients = [new_uuid() for _ in range(30)]
    for n, uuid in enumerate(patients):
        put(parent, patient(uuid, f"Family{n}"))
    with FaultProxy("127.0.0.1", parent.port) as proxy:
        via_proxy = NodeHandle(parent.node_dir, "parent", proxy.port, parent.admin_password)
        child = node_factory("child", parent=via_proxy, start=False)

        def lose_parent(event: RunEvent) -> None:
            if isinstance(event, RunProgress) and event.category == "patient" and event.done == 5:
                if fault == "refused":
                    proxy.refuse()
                else:
                    proxy.drop_after(0, always=True)  # every answer dies before its first byte

        config, db = child.open()
        try:
            broken = run_pull(config, db, listener=lose_parent)
        finally:
            db.dispose()
        assert broken.outcome == "unreachable", broken
        assert broken.error is not None and "ConnectionFailed" in broken.error
        # The first page is kept with its marker; nothing of the page being read when the parent
        # went away was half-applied.
        assert {u for (_c, u) in held(child)} == set(patients[:5])
        proxy.heal()
        done = pull(child)
    assert done.outcome == "ok", done
    assert (done.events_read, done.applied) == (25, 25)  # resumed after the marker
    assert held(child) == held(parent)


def test_parent_refusing_connections_is_unreachable_not_a_failure(
    node_factory: NodeFactory,
) -> None:
    parent = node_factory("parent")
    put(parent, patient(new_uuid(), "Asante"))
    with FaultProxy("127.0.0.1", parent.port) as proxy:
        via_proxy = NodeHandle(parent.node_dir, "parent", proxy.port, parent.admin_password)
        child = node_factory("child", parent=via_proxy, start=False)
        proxy.refuse()
        refused = pull(child)
        assert refused.outcome == "unreachable", refused
        proxy.heal()
        assert pull(child).applied == 1


def test_wrong_parent_password_stops_the_run_and_names_it(node_factory: NodeFactory) -> None:
    parent = node_factory("parent")
    put(parent, patient(new_uuid(), "Asante"))
    child = node_factory("child", parent=parent, parent_password="not-the-password", start=False)
    result = pull(child)
    # The parent answers: its account for this node is what to fix (exit 2, not 3).
    assert result.outcome == "configuration", result
    assert result.error is not None and result.error.startswith("Unauthenticated")
    assert held(child) == {}
    shown = cli("pull", str(child.node_dir))
    assert shown.returncode == 2, shown.stdout + shown.stderr
    assert "configuration error: Unauthenticated" in shown.stderr
    assert "parent_password" in shown.stderr


# --- a Java OpenMRS parent ----------------------------------------------------------------------


def test_a_java_style_feed_is_pulled_completely(node_factory: NodeFactory) -> None:
    patients = [new_uuid() for _ in range(12)]
    visit_types = [new_uuid() for _ in range(4)]
    fhir = [patient(uuid, f"Java{n}") for n, uuid in enumerate(patients)]
    rest_objects = {
        f"{REST}/visittype/{uuid}": {
            "uuid": uuid,
            "display": f"Type {n}",
            "name": f"Type {n}",
            "description": None,
            "retired": False,
            "links": [{"rel": "self", "uri": f"http://elsewhere/{REST}/visittype/{uuid}"}],
            "resourceVersion": "1.8",
        }
        for n, uuid in enumerate(visit_types)
    }
    feed = [JavaEvent("patient", uuid) for uuid in patients]
    feed += [JavaEvent("visittype", uuid) for uuid in visit_types]
    feed.append(JavaEvent("patient", patients[0], "UPDATED"))
    feed.append(feed[1])  # the same event twice (a Java publisher re-chunking its pages)
    with JavaFeedServer(feed, fhir=fhir, rest=rest_objects).start() as java:
        child = node_factory("child", start=False)
        _point_at(child, java.base_url)
        result = pull(child)
        assert result.outcome == "ok", result
        on_child = held(child)
        assert {u for (c, u) in on_child if c == "patient"} == set(patients)
        assert {u for (c, u) in on_child if c == "visittype"} == set(visit_types)
        # Page 1 was read first, never a walk back from recent; pages were asked on our host.
        assert java.feed_requests("patient")[0] == "1"
        count = event_count(child)
        java.add(JavaEvent("patient", patients[5], "VOIDED"))
        again = pull(child)
        assert again.outcome == "ok", again
        assert held(child)[("patient", patients[5])][1] == "voided"
        assert event_count(child) == count + 1


def _point_at(node: NodeHandle, parent_url: str, *, extra_classes: tuple[str, ...] = ()) -> None:
    """Make ``node`` pull from ``parent_url`` (a server that is not a fhirsync node), reading
    also the feeds of ``extra_classes`` (a Sync 2.0 sync2.json lists sub-resource feeds)."""
    path = node.node_dir / "sync2.json"
    data = json.loads(path.read_text())
    data["general"]["parentFeedLocation"] = parent_url
    for name in extra_classes:
        row = categories.get(name)
        data["pull"]["classes"].append(
            {
                "classTitle": row.title,
                "category": row.name,
                "openMrsClass": row.openmrs_class,
                "enabled": True,
            }
        )
    path.write_text(json.dumps(data))


def test_java_sub_resource_entries_pull_their_owner(node_factory: NodeFactory) -> None:
    person = new_uuid()
    name_uuid = new_uuid()
    body = {
        "resourceType": "Person",
        "id": person,
        "name": [{"family": "Osei", "given": ["Kofi"]}],
        "gender": "male",
    }
    feed = [
        JavaEvent("person", person),
        # A person_name entry names its owner in the link; the owner is fetched again.
        JavaEvent("person_name", name_uuid, "UPDATED", parent_uuid=person),
    ]
    with JavaFeedServer(feed, fhir=[body]).start() as java:
        child = node_factory("child", start=False)
        # fhirsync nodes publish name changes as changes of the person; a Java parent has a
        # person_name feed, which the default class list does not read: list it as Sync 2.0 did.
        _point_at(child, java.base_url, extra_classes=("person_name",))
        first = pull(child)
        assert first.outcome == "ok", first
        assert ("person", person) in held(child)
        java.fhir[("Person", person)] = {**body, "name": [{"family": "Osei-Bonsu"}]}
        java.add(JavaEvent("person_name", name_uuid, "UPDATED", parent_uuid=person))
        second = pull(child)
    assert second.outcome == "ok", second
    _config, db = child.open()
    try:
        with db.read() as conn:
            stored = conn.execute(
                select(records.c.body).where(records.c.uuid == person)
            ).scalar_one()
    finally:
        db.dispose()
    assert b"Osei-Bonsu" in stored


def test_an_idle_pull_does_not_rewrite_its_lock_for_every_category(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~25 lock writes a run kept the WAL busy on a short schedule, so it never checkpointed.
    from fhirsync.store import locks

    parent = node_factory("parent")
    child = node_factory("child", parent=parent, start=False)
    extended: list[str] = []
    real = locks.refresh
    monkeypatch.setattr(
        locks, "refresh", lambda db, name, *rest: (extended.append(name), real(db, name, *rest))
    )
    result = pull(child)
    assert (result.outcome, result.events_read) == ("ok", 0), result
    assert extended == []  # a run shorter than a quarter of the lock's lifetime extends nothing
