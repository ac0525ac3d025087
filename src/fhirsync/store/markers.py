"""Feed markers: how far this node has read each parent feed, and nothing else.

A marker is a fact about committed data (STYLE principle 3): :func:`advance` runs in the caller's
transaction, the same one that commits the records the marker passes. It is keyed by
:class:`~fhirsync.records.MarkerKey` (parent feed base URL, category, hash of the filter settings),
so a changed filter or parent URL starts from the beginning instead of silently reusing a position
(unless :func:`move_feed` carries the positions to the same parent's new address).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, insert, select, update

from fhirsync.records import MarkerKey
from fhirsync.store.tables import failures, markers


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


def keyed_for_feed(conn: Connection, feed_base: str) -> list[tuple[MarkerKey, Marker]]:
    """Every marker on ``feed_base`` with its full key (all categories and filter hashes)."""
    rows = conn.execute(select(markers).where(markers.c.feed_base == feed_base.rstrip("/")))
    return [
        (
            MarkerKey(r.feed_base, r.category, r.filter_hash),
            Marker(r.last_entry_id, r.last_page, r.updated_at.replace(tzinfo=UTC)),
        )
        for r in rows
    ]


def move_feed(conn: Connection, old_base: str, new_base: str) -> int:
    """Re-key every marker of ``old_base`` to ``new_base`` (the same feed at a new address), and
    the failures recorded under those markers; how many markers moved. Markers already held for
    ``new_base`` are replaced."""
    moved = 0
    for old_key, _marker in keyed_for_feed(conn, old_base):
        new_key = MarkerKey(new_base.rstrip("/"), old_key.category, old_key.filter_hash)
        conn.execute(delete(markers).where(markers.c.marker_key == new_key.key))
        conn.execute(
            update(markers)
            .where(markers.c.marker_key == old_key.key)
            .values(marker_key=new_key.key, feed_base=new_key.feed_base)
        )
        conn.execute(
            update(failures)
            .where(failures.c.marker_key == old_key.key)
            .values(marker_key=new_key.key)
        )
        moved += 1
    return moved
