"""`fhirsync move-parent`: the same parent at a new address keeps the child's feed positions;
a different parent is refused unless read from the start."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select
from tests.conftest import NodeFactory
from tests.integration.conflict_support import edit, open_conflicts, read
from tests.integration.pull_support import cli, held, new_uuid, patient, pull, put
from tests.integration.test_conflict_rest import REST, create_visittype
from tests.integration.test_push import (
    CHILD_PASSWORD,
    add_child_account,
    create_patients,
    make_pair,
    open_failures,
    push,
)
from tests.integration.test_push_stop_on_failure import store_record

from fhirsync.store.agreed import UNCHECKED
from fhirsync.store.tables import agreed
from fhirsync.testing.javafeed import JavaEvent, JavaFeedServer
from fhirsync.testing.servers import NodeHandle, free_port


def _parent_url(node: NodeHandle) -> str:
    data = json.loads((node.node_dir / "sync2.json").read_text())
    return str(data["general"]["parentFeedLocation"])


@contextmanager
def _served_elsewhere(node: NodeHandle) -> Iterator[NodeHandle]:
    """``node`` stopped, and its directory served again on another port (a moved server)."""
    node.stop()
    moved = NodeHandle(node.node_dir, node.instance_id, free_port(), node.admin_password).start()
    try:
        yield moved
    finally:
        moved.stop()


def test_the_same_parent_at_a_new_address_keeps_the_feed_positions(
    node_factory: NodeFactory,
) -> None:
    parent, child = make_pair(node_factory)  # the child pushes with its own account
    for n in range(12):
        put(parent, patient(new_uuid(), f"Before{n}"))
    assert pull(child).applied == 12
    local = create_patients(child, 1)[0]
    assert push(child).applied == 1
    assert pull(child).applied == 0  # reads its own change back from the feed, and skips it
    with _served_elsewhere(parent) as moved:
        done = cli("move-parent", str(child.node_dir), moved.base_url + "/")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "feed positions carried over" in done.stdout
        assert _parent_url(child) == moved.base_url
        put(moved, patient(later := new_uuid(), "After"))
        after = pull(child)
        # Only the new change is read, not the twelve again from page 1.
        assert (after.outcome, after.events_read, after.applied) == ("ok", 1, 1), after
        assert ("patient", later) in held(child)
        assert held(child) == held(moved)
        # How far this node had pushed came along too: push reads only the one event logged
        # since (the change just pulled, which it does not send back), not its whole log.
        again = push(child)
        assert (again.outcome, again.events_read, again.applied) == ("ok", 1, 0), again
        assert ("patient", local) in held(moved)


def test_a_different_parent_is_refused_unless_read_from_the_start(
    node_factory: NodeFactory,
) -> None:
    parent = node_factory("parent")
    other = node_factory("other")
    child = node_factory("child", parent=parent, start=False)
    put(parent, patient(new_uuid(), "Mine"))
    for n in range(3):
        put(other, patient(new_uuid(), f"Theirs{n}"))
    assert pull(child).applied == 1
    before = _parent_url(child)

    refused = cli("move-parent", str(child.node_dir), other.base_url)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "does not look like the parent" in refused.stderr and "--from-start" in refused.stderr
    assert _parent_url(child) == before

    unreachable = cli("move-parent", str(child.node_dir), f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 3, unreachable.stdout + unreachable.stderr
    assert _parent_url(child) == before

    # Read from the start, but still a sync parent: a typo or a dead address changes nothing
    # (a move forgets what the node agreed with its old parent).
    for wrong, code in ((other.base_url + "/openmrs", 2), (f"http://127.0.0.1:{free_port()}", 3)):
        typo = cli("move-parent", str(child.node_dir), wrong, "--from-start")
        assert typo.returncode == code, typo.stdout + typo.stderr
        assert _parent_url(child) == before

    fresh = cli("move-parent", str(child.node_dir), other.base_url, "--from-start")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "from the beginning" in fresh.stdout
    assert pull(child).applied == 3
    assert held(other).items() <= held(child).items()


def _java_child(node_factory: NodeFactory, parent_url: str) -> NodeHandle:
    """A child pulling only patients from the Java-style parent at ``parent_url``."""
    child = node_factory("child", start=False)
    path = child.node_dir / "sync2.json"
    data = json.loads(path.read_text())
    data["general"]["parentFeedLocation"] = parent_url
    for cls in data["pull"]["classes"]:
        cls["enabled"] = cls["category"] == "patient"
    path.write_text(json.dumps(data))
    return child


def test_a_java_parent_moved_or_replaced(node_factory: NodeFactory) -> None:
    # OpenMRS pages hold 5 entries and a page past the last one answers 500.
    first = [new_uuid() for _ in range(12)]
    later = [new_uuid() for _ in range(10)]
    fhir = [patient(uuid, f"Java{n}") for n, uuid in enumerate(first + later)]
    feed = [JavaEvent("patient", uuid) for uuid in first]
    with JavaFeedServer(feed, fhir=fhir).start() as old:
        old_url = old.base_url
        child = _java_child(node_factory, old_url)
        assert pull(child).applied == 12  # the marker is on page 3 of 3

    # Another OpenMRS whose patient feed has one page only: page 3 answers 500 there.
    with JavaFeedServer(feed[:3], fhir=fhir).start() as other:
        refused = cli("move-parent", str(child.node_dir), other.base_url)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "does not look like the parent" in refused.stderr, refused.stderr
        assert _parent_url(child) == old_url

    # The same OpenMRS at a new address, grown since: the marker's page 3 is archived now.
    feed += [JavaEvent("patient", uuid) for uuid in later]
    with JavaFeedServer(feed, fhir=fhir).start() as moved:
        done = cli("move-parent", str(child.node_dir), moved.base_url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert _parent_url(child) == moved.base_url
        after = pull(child)
        assert (after.outcome, after.events_read, after.applied) == ("ok", 10, 10), after
        assert moved.feed_requests("patient")[1:] == ["3", "4", "5"]


def _agreed_versions(node: NodeHandle) -> dict[str, str | None]:
    _config, db = node.open()
    try:
        with db.read() as conn:
            rows = conn.execute(select(agreed.c.uuid, agreed.c.parent_version))
            return {r.uuid: r.parent_version for r in rows}
    finally:
        db.dispose()


def test_a_move_to_another_parent_sends_none_of_the_old_parents_versions(
    node_factory: NodeFactory,
) -> None:
    old, child = make_pair(node_factory)
    new = node_factory("new-parent")
    add_child_account(new, "child-a", CHILD_PASSWORD)
    mine = create_patients(child, 1)[0]
    assert push(child).applied == 1
    edit(child, mine, gender="female")
    assert push(child).applied == 1  # the old parent holds it at version 2, and the child knows

    done = cli("move-parent", str(child.node_dir), new.base_url, "--from-start")
    assert done.returncode == 0, done.stdout + done.stderr
    # The base stays, the old parent's tag goes: the new parent's copy is read before a push.
    assert _agreed_versions(child) == {mine: UNCHECKED}
    edit(child, mine, birthDate="1980-01-01")
    after = push(child)
    # The new parent never had the record: sent with the old parent's version as If-Match it
    # was refused (412), taken for one voided there and kept as a conflict, never sent.
    assert (after.outcome, after.failures, after.applied) == ("ok", 0, 1), after
    assert open_failures(child) == [] and open_conflicts(child) == []
    assert held(child)[("patient", mine)][1] == "active", held(child)[("patient", mine)]
    assert held(new)[("patient", mine)] == held(child)[("patient", mine)]
    assert held(old)[("patient", mine)] != held(child)[("patient", mine)]
    assert _agreed_versions(child)[mine] not in (None, UNCHECKED)  # the new parent's version


def test_a_push_to_a_new_parent_before_any_pull_overwrites_none_of_its_changes(
    node_factory: NodeFactory,
) -> None:
    _old, child = make_pair(node_factory)
    new = node_factory("new-parent")
    add_child_account(new, "child-a", CHILD_PASSWORD)
    shared, only_here = create_patients(child, 2)
    kind = create_visittype(child, "Outpatient")
    assert push(child).applied == 3
    # The new parent holds ``shared`` and ``kind`` too (synced there through another branch of
    # the tree) and has changed them since; ``only_here`` it never had.
    put(new, read(child, shared))
    edit(new, shared, gender="female")
    edit(child, shared, birthDate="1980-01-01")
    with new.client() as client:
        body = {"uuid": kind, "name": "Outpatient", "description": "base"}
        client.post(f"{REST}/visittype", json=body).raise_for_status()
        client.post(f"{REST}/visittype/{kind}", json={"description": "new"}).raise_for_status()
    with child.client() as client:
        client.post(f"{REST}/visittype/{kind}", json={"name": "Clinic"}).raise_for_status()

    done = cli("move-parent", str(child.node_dir), new.base_url, "--from-start")
    assert done.returncode == 0, done.stdout + done.stderr
    first = push(child)
    assert (first.outcome, first.failures) == ("ok", 0), first
    # Its changes kept, the child's merged in (the merges go up with the next run).
    assert read(new, shared)["gender"] == "female"
    assert (read(child, shared)["gender"], read(child, shared)["birthDate"]) == (
        "female",
        "1980-01-01",
    )
    assert _visittype(new, kind)["description"] == "new"
    assert open_conflicts(child) == [] and open_failures(child) == []
    assert held(new)[("patient", only_here)] == held(child)[("patient", only_here)]
    again = push(child)
    assert (again.outcome, again.failures) == ("ok", 0), again
    for key in (("patient", shared), ("visittype", kind)):
        assert held(new)[key] == held(child)[key], key
    assert (read(new, shared)["gender"], read(new, shared)["birthDate"]) == ("female", "1980-01-01")
    assert (_visittype(new, kind)["name"], _visittype(new, kind)["description"]) == (
        "Clinic",
        "new",
    )


def _visittype(node: NodeHandle, uuid: str) -> dict[str, object]:
    with node.client() as client:
        answer = client.get(f"{REST}/visittype/{uuid}")
        answer.raise_for_status()
        body: dict[str, object] = answer.json()
        return body


def test_records_a_new_parent_holds_too_do_not_stop_a_push_in_order(
    node_factory: NodeFactory,
) -> None:
    _old, child = make_pair(node_factory, continue_on_failure=False)
    new = node_factory("new-parent")
    add_child_account(new, "child-a", CHILD_PASSWORD)
    uuids = create_patients(child, 4)
    assert push(child).applied == 4
    for uuid in uuids[:2]:
        put(new, read(child, uuid))

    done = cli("move-parent", str(child.node_dir), new.base_url, "--from-start")
    assert done.returncode == 0, done.stdout + done.stderr
    first = push(child)
    # The two it holds agree with the child's; the two others go up; one run, the whole log.
    assert (first.outcome, first.failures, first.applied) == ("ok", 0, 2), first
    assert all(held(new)[("patient", u)] == held(child)[("patient", u)] for u in uuids)
    assert open_conflicts(child) == [] and open_failures(child) == []
    assert UNCHECKED not in _agreed_versions(child).values()
    again = push(child)
    assert (again.outcome, again.events_read, again.applied) == ("ok", 0, 0), again


def test_a_copy_the_new_parent_serves_broken_is_a_failure_to_retry(
    node_factory: NodeFactory,
) -> None:
    _old, child = make_pair(node_factory)
    new = node_factory("new-parent")
    add_child_account(new, "child-a", CHILD_PASSWORD)
    shared = create_patients(child, 1)[0]
    assert push(child).applied == 1
    # Stored there without the API's checks (as an older node version might have).
    store_record(new, "patient", shared, {**patient(shared, "Broken"), "birthDate": 12})
    before = held(new)[("patient", shared)]

    done = cli("move-parent", str(child.node_dir), new.base_url, "--from-start")
    assert done.returncode == 0, done.stdout + done.stderr
    after = push(child)
    assert (after.outcome, after.failures) == ("failures", 1), after
    assert [f.record_uuid for f in open_failures(child)] == [shared]
    assert held(new)[("patient", shared)] == before  # not overwritten
