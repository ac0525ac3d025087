"""How far behind a feed position is: event positions by entry id, and unpushed local changes."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, func, or_, select

from fhirsync.records import ENTRY_ID_PREFIX
from fhirsync.store.tables import events


def seqs_of_entries(conn: Connection, entry_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
    """Entry id → (category, seq) of the events with these Atom entry ids (unknown ids absent)."""
    by_uuid = {e.removeprefix(ENTRY_ID_PREFIX): e for e in entry_ids if e}
    if not by_uuid:
        return {}
    rows = conn.execute(
        select(events.c.event_uuid, events.c.category, events.c.seq).where(
            events.c.event_uuid.in_(list(by_uuid))
        )
    )
    return {by_uuid[str(u)]: (str(c), int(s)) for u, c, s in rows}


def relayable_after(conn: Connection, category: str, after_seq: int, pulled_via: str) -> int:
    """Events of ``category`` after ``after_seq`` that a push would send (not pulled ones)."""
    value = conn.execute(
        select(func.count())
        .select_from(events)
        .where(
            events.c.category == category,
            events.c.seq > after_seq,
            or_(events.c.via.is_(None), events.c.via != pulled_via),
        )
    ).scalar()
    return int(value or 0)
