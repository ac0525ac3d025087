"""Feed markers: how far this node has read each parent feed, and nothing else.

A marker is a fact about committed data (STYLE principle 3): :func:`advance` runs in the caller's
transaction, the same one that commits the records the marker passes. It is keyed by
:class:`~fhirsync.records.MarkerKey` (parent feed base URL, category, hash of the filter settings),
so a changed filter or parent URL starts from the beginning instead of silently reusing a position.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from fhirsync.records import MarkerKey
from fhirsync.store.tables import markers


@dataclass(frozen=True, slots=True)
class Marker:
    """A position in a feed: the last processed entry and the page it was read on."""

    last_entry_id: str | None
    last_page: int | None
    updated_at: datetime | None = None


EMPTY = Marker(last_entry_id=None, last_page=None)


def get(conn: Connection, key: MarkerKey) -> Marker:
    """The stored position for ``key``; :data:`EMPTY` (read from page 1) when there is none."""
    row = conn.execute(
        select(markers.c.last_entry_id, markers.c.last_page, markers.c.updated_at).where(
            markers.c.marker_key == key.key
        )
    ).first()
    if row is None:
        return EMPTY
    return Marker(row.last_entry_id, row.last_page, row.updated_at.replace(tzinfo=UTC))


def advance(conn: Connection, key: MarkerKey, entry_id: str, page: int | None) -> None:
    """Move the marker of ``key`` to ``entry_id`` on ``page``, in the caller's transaction."""
    now = datetime.now(UTC).replace(tzinfo=None)
    values = {"last_entry_id": entry_id, "last_page": page, "updated_at": now}
    done = conn.execute(update(markers).where(markers.c.marker_key == key.key).values(**values))
    if done.rowcount == 0:
        conn.execute(
            insert(markers).values(
                marker_key=key.key,
                feed_base=key.feed_base,
                category=key.category,
                filter_hash=key.filter_hash,
                **values,
            )
        )


def for_feed(conn: Connection, feed_base: str) -> dict[str, Marker]:
    """Every marker on ``feed_base`` by category (all filter hashes; newest wins)."""
    rows = conn.execute(
        select(markers)
        .where(markers.c.feed_base == feed_base.rstrip("/"))
        .order_by(markers.c.updated_at)
    )
    return {
        r.category: Marker(r.last_entry_id, r.last_page, r.updated_at.replace(tzinfo=UTC))
        for r in rows
    }
