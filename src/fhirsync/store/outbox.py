"""The push side's read of the node's OWN event log: what to send to the parent after a position.

Push reads its own events straight from the store (never its own feed over HTTP). A batch is a range
of one category's gap-free sequence numbers; repeated events of one record collapse to the newest,
and a record whose newest event came from the parent (``via == "parent"``) is not sent back up: the
parent already holds that version (no echo, DESIGN.md §5 promise 4). Changes made here (``via``
None) and changes pushed by this node's children (``via == "child:..."``) are relayed upward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection

from fhirsync.categories import Category
from fhirsync.records import ChangeEvent, Record
from fhirsync.store import agreed as agreed_repo
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store import events as event_log
from fhirsync.store import records as record_repo
from fhirsync.store.agreed import Agreed
from fhirsync.store.audit import AuditPolicy
from fhirsync.store.engine import Database
from fhirsync.store.local import CommitHook, StoreLocalSide

PULLED_VIA = "parent"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One record to send: its newest relayable event and its current local copy."""

    event: ChangeEvent
    record: Record | None
    """None only if the record vanished from the store (never expected; reported as a failure)."""


@dataclass(slots=True)
class OutboxBatch:
    """What one range of a category's events asks to be pushed."""

    category: str
    after_seq: int
    last_event: ChangeEvent | None = None
    """The newest event read (the marker moves here once the batch is done)."""
    events_read: int = 0
    items: list[OutboxItem] = field(default_factory=list)
    skipped_pulled: int = 0
    """Records whose newest event in the range came from the parent (not echoed)."""

    @property
    def last_seq(self) -> int:
        """The sequence number the batch ends at (its start when it read nothing)."""
        return self.last_event.seq if self.last_event is not None else self.after_seq


def relayable(event: ChangeEvent) -> bool:
    """True unless the event came down from the parent (local and children's changes go up)."""
    return event.via != PULLED_VIA


def collapse(found: Sequence[ChangeEvent]) -> list[ChangeEvent]:
    """The newest event of each record, in the order of those newest events."""
    newest: dict[str, ChangeEvent] = {}
    for ev in found:
        newest.pop(ev.record_uuid, None)
        newest[ev.record_uuid] = ev
    return list(newest.values())


def read_batch(conn: Connection, category: str, after_seq: int, limit: int) -> OutboxBatch:
    """Events ``after_seq+1 .. after_seq+limit`` of ``category`` as records to push."""
    found = event_log.between(conn, category, after_seq + 1, after_seq + limit)
    batch = OutboxBatch(category=category, after_seq=after_seq, events_read=len(found))
    if not found:
        return batch
    batch.last_event = found[-1]
    wanted: list[ChangeEvent] = []
    for ev in collapse(found):
        if relayable(ev):
            wanted.append(ev)
        else:
            batch.skipped_pulled += 1
    current = record_repo.get_many(conn, [category], [ev.record_uuid for ev in wanted])
    batch.items = [OutboxItem(ev, current.get(ev.record_uuid)) for ev in wanted]
    return batch


def head(conn: Connection, category: str) -> int:
    """The newest sequence number of ``category`` (0 when it has no events)."""
    return event_log.latest_seq(conn, category)


class StoreOutboxSide(StoreLocalSide):
    """The store's local side plus the push reads (a backwards-compatible extension)."""

    def __init__(
        self, db: Database, instance_id: str, policy: AuditPolicy, hook: CommitHook | None = None
    ) -> None:
        super().__init__(db, instance_id, policy, hook)

    def outbox_head(self, category: Category) -> int:
        """The newest event sequence number of ``category``."""
        with self.db.read() as conn:
            return head(conn, category.name)

    def read_outbox(self, category: Category, after_seq: int, limit: int) -> OutboxBatch:
        """The next batch of ``category`` to push after ``after_seq`` (at most ``limit`` events)."""
        with self.db.read() as conn:
            return read_batch(conn, category.name, after_seq, limit)

    def sync_state(
        self, category: Category, uuids: Sequence[str]
    ) -> tuple[dict[str, Agreed], set[str]]:
        """The agreed versions of these records, and those with an open conflict (held back)."""
        with self.db.read() as conn:
            bases = agreed_repo.get_many(conn, category.name, uuids)
            held = set(conflict_repo.open_for(conn, category.name, uuids))
        return bases, held

    def pending_pushes(self, category: Category) -> list[str]:
        """Records of ``category`` to send though no new event asks for it (merges, resolutions)."""
        with self.db.read() as conn:
            return [a.uuid for a in agreed_repo.pending(conn, category.name)]
