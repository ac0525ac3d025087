"""Which events make up page n of a category's feed, and the page's cache validator."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fhirsync import categories
from fhirsync.errors import RecordNotFound
from fhirsync.records import ChangeEvent
from fhirsync.store import events
from fhirsync.store.engine import Database


@dataclass(frozen=True, slots=True)
class FeedPageData:
    """One page's events and what the HTTP layer needs to cache it."""

    category: str
    page: int
    latest_page: int
    events: list[ChangeEvent]
    etag: str
    archived: bool
    """True for pages before the latest one: they never change again."""


def _latest_page(count: int, size: int) -> int:
    # An empty feed still has a (empty) page 1: OpenMRS answered 500 there (spec §13.21).
    return max(1, -(-count // size))


def load_page(db: Database, category: str, page: int | None, size: int) -> FeedPageData:
    """Page ``page`` (None = recent) of ``category``; RecordNotFound outside 1..latest."""
    name = categories.get(category).name
    with db.read() as conn:
        count = events.latest_seq(conn, name)
        latest = _latest_page(count, size)
        number = latest if page is None else page
        if number < 1 or number > latest:
            raise RecordNotFound(f"feed {name} has no page {number} (pages 1..{latest})")
        first = (number - 1) * size + 1
        page_events = events.between(conn, name, first, min(number * size, count))
    archived = number < latest
    if archived:
        # Archived pages are immutable: the validator is their content identity.
        basis = f"{name}|{size}|{number}|{page_events[0].event_uuid}|{page_events[-1].event_uuid}"
    else:
        basis = f"{name}|{size}|{number}|{count}"
    digest = hashlib.sha256(basis.encode()).hexdigest()[:32]
    return FeedPageData(name, number, latest, page_events, f'"{digest}"', archived)
