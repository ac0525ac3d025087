"""Property: random interleavings of edits and voids on a parent and a child, with sync rounds.

Afterwards every record is identical on both nodes, or the child holds an open conflict with
both versions (the parent's current one and its own). No edit is lost without a trace: the last
change each node made to a field (or its void) is still on that node, unless an open conflict
holds the record or the other node changed the same field AFTER it had received that change
(a later edit that knew of it, which is not a loss).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fhirsync import canonical
from fhirsync.records import Record
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store import records as record_repo
from fhirsync.store.conflicts import Conflict
from fhirsync.testing.network import (
    FHIR,
    Network,
    build_network,
    create_patient,
    sync_until_quiet,
)
from fhirsync.testing.servers import NodeHandle

PAIR: tuple[tuple[str, str | None], ...] = (("parent", None), ("child", "parent"))
NODES = ("parent", "child")
PATIENTS = 2
VALUES: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female", "other", "unknown"),
    "birthDate": ("1970-01-01", "1985-06-15", "2001-12-31"),
}


@dataclass(frozen=True)
class Op:
    """One change made on one node (``field`` is ``@state`` for a void)."""

    seq: int
    node: str
    patient: int
    field: str
    value: str
    seen: int
    """The last op seq on this patient the node is known to have received when it made this."""


edit_step = st.tuples(
    st.just("edit"),
    st.sampled_from(NODES),
    st.integers(0, PATIENTS - 1),
    st.sampled_from(sorted(VALUES)),
    st.integers(0, 3),
)
void_step = st.tuples(
    st.just("void"), st.sampled_from(NODES), st.integers(0, PATIENTS - 1), st.just(""), st.just(0)
)
sync_step = st.tuples(st.just("sync"), st.just(""), st.just(0), st.just(""), st.just(0))
plans = st.lists(st.one_of(edit_step, edit_step, void_step, sync_step), min_size=2, max_size=7)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    network = build_network(tmp_path / "net", PAIR)
    yield network
    network.stop()


def _stored(node: NodeHandle, uuids: list[str]) -> tuple[dict[str, Record], dict[str, Conflict]]:
    _config, db = node.open()
    try:
        with db.read() as conn:
            found = {u: record_repo.get(conn, "patient", u) for u in uuids}
            open_ = conflict_repo.open_for(conn, "patient", uuids)
    finally:
        db.dispose()
    return {u: r for u, r in found.items() if r is not None}, open_


def _edit(node: NodeHandle, uuid: str, field: str, value: str) -> None:
    with node.client() as client:
        body: dict[str, Any] = client.get(f"{FHIR}/Patient/{uuid}").raise_for_status().json()
        body[field] = value
        client.put(f"{FHIR}/Patient/{uuid}", json=body).raise_for_status()


def _void(node: NodeHandle, uuid: str) -> None:
    with node.client() as client:
        client.delete(f"{FHIR}/Patient/{uuid}").raise_for_status()


class Run:
    """One example: its patients, the ops made, and what each sync delivered."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.uuids = [create_patient(net.nodes["parent"], f"Prop{i}") for i in range(PATIENTS)]
        self.ops: list[Op] = []
        self.delivered = [0] * PATIENTS
        self.sync()

    def sync(self) -> None:
        sync_until_quiet(self.net)
        parent, _ = _stored(self.net.nodes["parent"], self.uuids)
        child, open_ = _stored(self.net.nodes["child"], self.uuids)
        for i, uuid in enumerate(self.uuids):
            # Both nodes hold the same version and nothing is pending: every op so far arrived.
            if uuid not in open_ and _same(parent.get(uuid), child.get(uuid)):
                self.delivered[i] = len(self.ops)

    def step(self, kind: str, node_name: str, patient: int, field: str, pick: int) -> None:
        if kind == "sync":
            self.sync()
            return
        node = self.net.nodes[node_name]
        uuid = self.uuids[patient]
        current, _ = _stored(node, [uuid])
        if current[uuid].state != "active":
            return  # a voided record is not edited (the FHIR API answers 410)
        if kind == "void":
            _void(node, uuid)
            field, value = "@state", "voided"
        else:
            value = VALUES[field][pick % len(VALUES[field])]
            if current[uuid].resource().get(field) == value:
                return  # no change, no op (nothing to lose)
            _edit(node, uuid, field, value)
        self.ops.append(
            Op(len(self.ops) + 1, node_name, patient, field, value, self.delivered[patient])
        )

    def check(self) -> None:
        parent, _ = _stored(self.net.nodes["parent"], self.uuids)
        child, open_ = _stored(self.net.nodes["child"], self.uuids)
        finals = {"parent": parent, "child": child}
        for i, uuid in enumerate(self.uuids):
            conflict = open_.get(uuid)
            if conflict is None:
                assert _same(parent[uuid], child[uuid]), f"patient {i} differs, no conflict"
            else:
                # Both versions are kept, current: the conflict holds each node's own version
                # (refreshed by later local edits and by pulls), and each node still holds it.
                assert conflict.paths, f"patient {i}: a conflict without fields"
                local = (canonical.content_hash(conflict.local()), conflict.local_state)
                remote = (canonical.content_hash(conflict.remote()), conflict.remote_state)
                assert local == _key(child[uuid]), f"patient {i}: stale local side"
                assert remote == _key(parent[uuid]), f"patient {i}: stale remote side"
            for op in self._last_ops(i):
                if conflict is not None or self._overwritten(op):
                    continue
                record = finals[op.node][uuid]
                if op.field == "@state":
                    assert record.state == op.value, f"lost void: {op}"
                else:
                    assert record.resource().get(op.field) == op.value, f"lost edit: {op}"

    def _last_ops(self, patient: int) -> list[Op]:
        last: dict[tuple[str, str], Op] = {}
        for op in self.ops:
            if op.patient == patient:
                last[(op.node, op.field)] = op
        return list(last.values())

    def _overwritten(self, op: Op) -> bool:
        """True when the other node changed the same field after it had received ``op``."""
        return any(
            later.patient == op.patient
            and later.node != op.node
            and later.field == op.field
            and later.seq > op.seq
            and later.seen >= op.seq
            for later in self.ops
        )


def _key(record: Record | None) -> tuple[str, str] | None:
    """What must agree: the content and the state (a pulled void brings the parent's last body,
    so voided copies hold the same content too)."""
    if record is None:
        return None
    return (record.content_hash, record.state)


def _same(a: Record | None, b: Record | None) -> bool:
    return a is not None and _key(a) == _key(b)


def test_random_interleavings_lose_no_edit(net: Network) -> None:
    @settings(
        max_examples=12,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
        phases=[Phase.explicit, Phase.generate],
    )
    @given(plan=plans)
    def run(plan: list[tuple[str, str, int, str, int]]) -> None:
        example = Run(net)
        for step in plan:
            example.step(*step)
        example.sync()
        example.check()

    run()


def _shared(net: Network) -> str:
    uuid = create_patient(net.nodes["parent"], "Osei")
    sync_until_quiet(net)
    return uuid


def test_a_child_void_against_a_parent_edit_is_a_conflict(net: Network) -> None:
    """The pushed void carries If-Match: the parent refuses it (412) instead of voiding its edit."""
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = _shared(net)
    _edit(parent, uuid, "gender", "male")
    _void(child, uuid)
    sync_until_quiet(net)
    stored_parent = _stored(parent, [uuid])[0][uuid]
    assert stored_parent.state == "active" and stored_parent.resource()["gender"] == "male"
    stored_child, open_ = _stored(child, [uuid])
    assert stored_child[uuid].state == "voided"
    assert open_[uuid].paths == ("@state",)


def test_a_pulled_void_refreshes_the_conflict(net: Network) -> None:
    """Child voids, parent edits (a conflict), then the parent voids too: both now hold the void,
    so the conflict should close (or hold the parent's void), not offer the old edit."""
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = _shared(net)
    _edit(parent, uuid, "gender", "male")
    _void(child, uuid)
    sync_until_quiet(net)
    _void(parent, uuid)
    sync_until_quiet(net)
    _records, open_ = _stored(child, [uuid])
    assert uuid not in open_ or open_[uuid].remote_state == "voided"


def test_a_pulled_void_brings_the_parents_last_body(net: Network) -> None:
    """The parent edits then voids before the child pulls: the child's voided copy should hold
    the parent's edited body (it matters when the record is unvoided later)."""
    parent, child = net.nodes["parent"], net.nodes["child"]
    uuid = _shared(net)
    _edit(parent, uuid, "gender", "male")
    _void(parent, uuid)
    sync_until_quiet(net)
    on_parent, _ = _stored(parent, [uuid])
    on_child, _ = _stored(child, [uuid])
    assert on_child[uuid].state == "voided"
    assert on_child[uuid].content_hash == on_parent[uuid].content_hash
