"""A three-level network of real nodes on loopback, synced in rounds (tests, demo, benchmarks).

    parent
    ├── child-a
    │   └── grandchild-a1
    └── child-b

Every child syncs with its own child account on its parent (bound to its instance id). A round
pushes from the leaves up (deepest first), then pulls from the top down, so one round carries a
change from any node to every other. :func:`run_three_level_demo` makes changes on several
nodes, syncs until a round moves nothing, and reports per-node record counts and whether every node
holds the same records (uuid → content hash and state).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table, func, select

from fhirsync.store import users
from fhirsync.store.tables import events, records
from fhirsync.sync.push_run import run_push
from fhirsync.sync.runner import run_pull
from fhirsync.sync.status import RunFinished
from fhirsync.testing.servers import NodeHandle, create_node

FHIR = "/ws/fhir2/R4"
TREE: tuple[tuple[str, str | None], ...] = (
    ("parent", None),
    ("child-a", "parent"),
    ("child-b", "parent"),
    ("grandchild-a1", "child-a"),
)


def child_password(instance_id: str) -> str:
    """The password of a node's child account on its parent (loopback test networks only)."""
    return f"{instance_id}-sync-password"


@dataclass
class Network:
    """Running nodes by instance id, and each one's parent."""

    nodes: dict[str, NodeHandle]
    parent_of: dict[str, str | None]

    def depth(self, name: str) -> int:
        """0 for the root, 1 for its children, ..."""
        up = self.parent_of[name]
        return 0 if up is None else 1 + self.depth(up)

    def stop(self) -> None:
        """Stop every node."""
        for handle in reversed(list(self.nodes.values())):
            handle.stop()


@dataclass
class RoundResult:
    """What one round moved, per node and direction."""

    pushes: dict[str, RunFinished] = field(default_factory=dict)
    pulls: dict[str, RunFinished] = field(default_factory=dict)

    @property
    def moved(self) -> int:
        """Records sent or applied in the round (0 once the network is quiescent)."""
        return sum(r.applied for r in [*self.pushes.values(), *self.pulls.values()])


@dataclass
class DemoResult:
    """The outcome of the three-level demo."""

    counts: dict[str, int]
    """Active records per node."""
    agree: bool
    rounds: int
    events: dict[str, int]
    """Events in each node's log (stays the same over extra rounds: no ping-pong)."""


def build_network(
    root: Path,
    tree: tuple[tuple[str, str | None], ...] = TREE,
    *,
    db_url: Callable[[str], str | None] | None = None,
    extra_settings: dict[str, object] | None = None,
) -> Network:
    """Create and start the nodes of ``tree`` (parents first), with a child account each."""
    nodes: dict[str, NodeHandle] = {}
    parent_of: dict[str, str | None] = {}
    for name, parent_name in tree:
        parent = nodes[parent_name] if parent_name else None
        if parent is not None:
            _add_child_account(parent, name)
        handle = create_node(
            root,
            name,
            parent=parent,
            parent_user=name,
            parent_password=child_password(name),
            db_url=db_url(name) if db_url else None,
            extra_settings=extra_settings,
        )
        nodes[name] = handle.start()
        parent_of[name] = parent_name
    return Network(nodes, parent_of)


def _add_child_account(parent: NodeHandle, instance_id: str) -> None:
    _config, db = parent.open()
    try:
        with db.write() as conn:
            users.add(conn, instance_id, child_password(instance_id), "child", instance_id)
    finally:
        db.dispose()


def sync_round(net: Network) -> RoundResult:
    """Push from the deepest nodes up, then pull from the top down."""
    result = RoundResult()
    order = sorted((n for n in net.nodes if net.parent_of[n]), key=net.depth)
    for name in reversed(order):
        result.pushes[name] = run_on(net.nodes[name], run_push)
    for name in order:
        result.pulls[name] = run_on(net.nodes[name], run_pull)
    return result


def run_on(node: NodeHandle, runner: Callable[..., RunFinished], **kwargs: Any) -> RunFinished:
    """One in-process run of ``node`` (``run_pull`` or ``run_push`` with ``kwargs``)."""
    config, db = node.open()
    try:
        return runner(config, db, **kwargs)
    finally:
        db.dispose()


def sync_until_quiet(net: Network, max_rounds: int = 6) -> int:
    """Rounds until one moves nothing (that quiet round included)."""
    for done in range(1, max_rounds + 1):
        if sync_round(net).moved == 0:
            return done
    return max_rounds


def snapshot(node: NodeHandle) -> dict[str, tuple[str, str]]:
    """uuid → (content hash, state) of the node's records that are not voided or deleted."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(records.c.uuid, records.c.content_hash, records.c.state).where(
                    records.c.state == "active"
                )
            )
            return {r.uuid: (r.content_hash, r.state) for r in rows}
    finally:
        db.dispose()


def count_rows(node: NodeHandle, table: Table) -> int:
    """Rows of ``table`` in the node's store."""
    _config, db = node.open()
    try:
        with db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)
    finally:
        db.dispose()


def event_count(node: NodeHandle) -> int:
    """Events in the node's log."""
    return count_rows(node, events)


def all_agree(net: Network) -> bool:
    """True when every node holds the same active records with the same content."""
    maps = [snapshot(h) for h in net.nodes.values()]
    return all(m == maps[0] for m in maps[1:])


def create_patient(node: NodeHandle, family: str, given: str = "Ama") -> str:
    """Create a Patient on ``node`` as its admin (a local edit there); returns its id."""
    uuid = str(uuidlib.uuid4())
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": uuid,
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1988-02-14",
    }
    with node.client() as client:
        client.put(f"{FHIR}/Patient/{uuid}", json=body).raise_for_status()
    return uuid


def run_three_level_demo(root: Path, patients_per_node: int = 3) -> DemoResult:
    """Build the tree, change data on every node, sync until quiet, report counts and agreement."""
    net = build_network(root)
    try:
        for name, handle in net.nodes.items():
            for i in range(patients_per_node):
                create_patient(handle, f"{name.title()}{i}")
        first = create_patient(net.nodes["grandchild-a1"], "Traveller")
        rounds = sync_until_quiet(net)
        # Changes travel both ways after the first sync: an update on child-b, a void on the parent.
        with net.nodes["child-b"].client() as client:
            body = client.get(f"{FHIR}/Patient/{first}").json()
            body["name"][0]["given"] = ["Renamed"]
            client.put(f"{FHIR}/Patient/{first}", json=body).raise_for_status()
        victim = next(iter(snapshot(net.nodes["child-a"])))
        with net.nodes["parent"].client() as client:
            client.delete(f"{FHIR}/Patient/{victim}").raise_for_status()
        rounds += sync_until_quiet(net)
        return DemoResult(
            counts={name: len(snapshot(h)) for name, h in net.nodes.items()},
            agree=all_agree(net),
            rounds=rounds,
            events={name: event_count(h) for name, h in net.nodes.items()},
        )
    finally:
        net.stop()
