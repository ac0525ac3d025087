"""The event log: one row per change, numbered per category so feed pages are index ranges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select, text

from fhirsync.records import Action, ChangeEvent
from fhirsync.store import bulk
from fhirsync.store.tables import events, feed_counters

_COLUMNS = ("category", "seq", "event_uuid", "record_uuid", "action", "timestamp", "origin", "via")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended (its sequence number is assigned on append)."""

    category: str
    record_uuid: str
    action: Action
    timestamp: datetime
    origin: str
    via: str | None


_RESERVE = text(
    "INSERT INTO feed_counters (category, last_seq) VALUES (:category, :count) "
    "ON CONFLICT (category) DO UPDATE SET last_seq = feed_counters.last_seq + excluded.last_seq "
    "RETURNING last_seq"
)


def _reserve(conn: Connection, category: str, count: int) -> int:
    """Reserve ``count`` sequence numbers of ``category``; returns the first one.

    The counter row is created or advanced by one statement inside the caller's transaction, so
    concurrent writers of one category serialise on it and sequence numbers stay gap-free and
    unique, also for a category's very first events (an update, then an insert when it found no
    row, let two first writers both insert: on PostgreSQL the second failed on the unique key).
    """
    last = conn.execute(_RESERVE, {"category": category, "count": count}).scalar_one()
    return int(last) - count + 1


def append(conn: Connection, new_events: Sequence[NewEvent]) -> list[ChangeEvent]:
    """Append events in the caller's transaction; returns them, in input order, with their seq."""
    counts: dict[str, int] = {}
    for ev in new_events:
        counts[ev.category] = counts.get(ev.category, 0) + 1
    # Counters are taken in category order: a writer holds each one until it commits, and two
    # writers taking two categories' counters in opposite orders deadlocked on PostgreSQL.
    next_seq = {category: _reserve(conn, category, n) for category, n in sorted(counts.items())}
    out: list[ChangeEvent] = []
    event_uuids = bulk.random_uuids(len(new_events))
    for ev, event_uuid in zip(new_events, event_uuids, strict=True):
        seq = next_seq[ev.category]
        next_seq[ev.category] = seq + 1
        out.append(
            ChangeEvent(
                seq=seq,
                category=ev.category,
                record_uuid=ev.record_uuid,
                event_uuid=event_uuid,
                action=ev.action,
                timestamp=ev.timestamp,
                origin=ev.origin,
                via=ev.via,
            )
        )
    # A batch's events share one write time: convert each distinct time once.
    times = {moment: bulk.db_time(conn, moment) for moment in {e.timestamp for e in out}}
    bulk.insert_rows(
        conn,
        events,
        _COLUMNS,
        [
            (
                e.category,
                e.seq,
                e.event_uuid,
                e.record_uuid,
                e.action,
                times[e.timestamp],
                e.origin,
                e.via,
            )
            for e in out
        ],
    )
    return out


def latest_seq(conn: Connection, category: str) -> int:
    """The number of events of ``category`` (its highest seq), 0 if none."""
    value = conn.execute(
        select(feed_counters.c.last_seq).where(feed_counters.c.category == category)
    ).scalar()
    return int(value or 0)


def latest_seqs(conn: Connection) -> dict[str, int]:
    """Highest seq of every category that has events."""
    rows = conn.execute(select(feed_counters.c.category, feed_counters.c.last_seq))
    return {str(r[0]): int(r[1]) for r in rows}


def between(conn: Connection, category: str, first_seq: int, last_seq: int) -> list[ChangeEvent]:
    """Events of ``category`` with ``first_seq <= seq <= last_seq``, oldest first."""
    # Named columns fetched at once and unpacked as tuples: feed pages read 1000 rows per
    # request, and attribute access on Row objects cost half of that read.
    rows = conn.execute(
        select(
            events.c.seq,
            events.c.record_uuid,
            events.c.event_uuid,
            events.c.action,
            events.c.timestamp,
            events.c.origin,
            events.c.via,
        )
        .where(events.c.category == category, events.c.seq.between(first_seq, last_seq))
        .order_by(events.c.seq)
    ).all()
    return [
        ChangeEvent(
            seq=seq,
            category=category,
            record_uuid=record_uuid,
            event_uuid=event_uuid,
            action=action,
            timestamp=timestamp.replace(tzinfo=UTC),
            origin=origin,
            via=via,
        )
        for seq, record_uuid, event_uuid, action, timestamp, origin, via in rows
    ]


def count_all(conn: Connection) -> int:
    """Total number of events in the log."""
    return int(conn.execute(select(func.count()).select_from(events)).scalar() or 0)
