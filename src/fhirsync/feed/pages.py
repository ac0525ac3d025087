"""Which events make up page n of a category's feed, and the page's cache validator.

Locating a page (its number, whether it is archived, its validator) costs two small indexed
queries; loading its events is a separate step, so a conditional GET answered with 304 never
reads the page's rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select

from fhirsync import categories
from fhirsync.errors import RecordNotFound
from fhirsync.records import ChangeEvent
from fhirsync.store import events
from fhirsync.store.engine import Database
from fhirsync.store.tables import events as events_table


@dataclass(frozen=True, slots=True)
class PageRef:
    """Where page ``page`` of a category lies in its event sequence, and its validator."""

    category: str
    page: int
    latest_page: int
    first_seq: int
    last_seq: int
    """Fixed when the page is located: events appended later are not part of this response."""
    etag: str
    archived: bool
    """True for pages before the latest one: they never change again."""


def _latest_page(count: int, size: int) -> int:
    # An empty feed still has a (empty) page 1: OpenMRS answered 500 there (spec §13).
    return max(1, -(-count // size))


def _digest(basis: str) -> str:
    return '"' + hashlib.sha256(basis.encode()).hexdigest()[:32] + '"'


def locate_page(db: Database, category: str, page: int | None, size: int) -> PageRef:
    """Page ``page`` (None = recent) of ``category``.

    UnknownResourceType for an unknown category, RecordNotFound outside 1..latest page.
    """
    name = categories.get(category).name
    with db.read() as conn:
        count = events.latest_seq(conn, name)
        latest = _latest_page(count, size)
        number = latest if page is None else page
        if number < 1 or number > latest:
            raise RecordNotFound(f"feed {name} has no page {number} (pages 1..{latest})")
        first, last = (number - 1) * size + 1, min(number * size, count)
        archived = number < latest
        if archived:
            # Archived pages are immutable: the validator is their content identity. The page
            # size is part of it, so a changed setting never revalidates a page of the old size.
            rows = conn.execute(
                select(events_table.c.seq, events_table.c.event_uuid).where(
                    events_table.c.category == name, events_table.c.seq.in_((first, last))
                )
            ).all()
            ends = {int(seq): str(uuid) for seq, uuid in rows}
            basis = f"{name}|{size}|{number}|{ends.get(first)}|{ends.get(last)}"
        else:
            # The latest page changes with every event: count and size identify its content.
            basis = f"{name}|{size}|{number}|{count}"
    return PageRef(name, number, latest, first, last, _digest(basis), archived)


def load_events(db: Database, ref: PageRef) -> list[ChangeEvent]:
    """The events of a located page, oldest first."""
    if ref.last_seq < ref.first_seq:
        return []
    with db.read() as conn:
        return events.between(conn, ref.category, ref.first_seq, ref.last_seq)
