"""The last version this node and its parent agreed on, per record: the base of a three-way merge.

A row is written in the SAME transaction as the pull or push commit that agreed on the version, so
after a crash the base always matches what both sides held. ``parent_version`` is the parent's
``meta.versionId`` when it is known (sent as ``If-Match`` on push); ``pending_push`` marks a record
whose local version must be sent up although no new event asks for it (a merge or resolution whose
result equals the local body, or a child-wins decision).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from fhirsync import canonical, categories
from fhirsync.records import RecordState
from fhirsync.store import bulk
from fhirsync.store.tables import agreed

_COLUMNS = (
    "category",
    "uuid",
    "content_hash",
    "body",
    "state",
    "parent_version",
    "pending_push",
    "updated_at",
)

_CHUNK = 500

UNCHECKED = "?"
"""``parent_version`` of a FHIR row agreed with a former parent (``move-parent --from-start``):
whether the parent now holds the record, and at which version, is unknown until its copy is read
(never a FHIR id, so no version a parent reports is ever taken for it)."""


@dataclass(frozen=True, slots=True)
class Agreed:
    """One agreed version of a record."""

    category: str
    uuid: str
    content_hash: str
    body: bytes
    """Canonical JSON of the unified body (no server bookkeeping)."""
    state: RecordState
    parent_version: str | None = None
    pending_push: bool = False

    def resource(self) -> dict[str, Any]:
        """The agreed body as a dict."""
        value: dict[str, Any] = canonical.loads(self.body)
        return value


def of_body(
    category: str,
    uuid: str,
    body: Mapping[str, Any],
    state: RecordState,
    parent_version: str | None,
    *,
    pending_push: bool = False,
) -> Agreed:
    """The agreed row of ``body`` (hash and bytes of its unified form)."""
    return Agreed(
        category,
        uuid,
        canonical.content_hash(body),
        canonical.unified_bytes(body),
        state,
        parent_version,
        pending_push,
    )


def get_many(conn: Connection, category: str, uuids: Iterable[str]) -> dict[str, Agreed]:
    """Agreed rows of ``category`` by uuid (missing uuids are left out)."""
    wanted = list(dict.fromkeys(uuids))
    out: dict[str, Agreed] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        rows = conn.execute(
            select(agreed).where(agreed.c.category == category, agreed.c.uuid.in_(chunk))
        )
        for row in rows:
            out[row.uuid] = _to_agreed(row)
    return out


def pending(conn: Connection, category: str, limit: int = 500) -> list[Agreed]:
    """Rows of ``category`` whose local version must be pushed."""
    rows = conn.execute(
        select(agreed)
        .where(agreed.c.category == category, agreed.c.pending_push.is_(True))
        .order_by(agreed.c.uuid)
        .limit(limit)
    )
    return [_to_agreed(r) for r in rows]


def upsert_many(conn: Connection, rows: Sequence[Agreed], *, now: datetime) -> None:
    """Insert or replace the agreed rows (the newest row of one record wins)."""
    if not rows:
        return
    latest = {(r.category, r.uuid): r for r in rows}
    when = bulk.db_time(conn, now)
    bulk.upsert_rows(
        conn,
        agreed,
        _COLUMNS,
        ("category", "uuid"),
        [
            (
                r.category,
                r.uuid,
                r.content_hash,
                r.body,
                r.state,
                r.parent_version,
                r.pending_push,
                when,
            )
            # In key order: a pull page and a push batch settling at once upserted the same
            # rows in their own orders, and on PostgreSQL each held one the other waited for.
            for _key, r in sorted(latest.items())
        ],
    )


def clear_pending(conn: Connection, category: str, uuids: Iterable[str]) -> None:
    """Forget the pending push of these records (they were sent)."""
    wanted = list(uuids)
    if wanted:
        conn.execute(
            update(agreed)
            .where(agreed.c.category == category, agreed.c.uuid.in_(wanted))
            .values(pending_push=False)
        )


def forget_parent(conn: Connection) -> int:
    """Forget every version tag agreed with the parent, for a node that moves to another parent
    (``fhirsync move-parent --from-start``); how many rows were changed.

    Those tags mean nothing there: sent as ``If-Match`` they named another parent's versions.
    Sent without one, a record the new parent holds too was overwritten with this node's copy.
    FHIR rows keep their body as the base of merges, with :data:`UNCHECKED` for the version:
    push reads the new parent's copy first (``sync.push_batch``). REST rows stay as they are:
    their tag is made from the agreed content, which any parent holding it matches.
    """
    fhir = [c.name for c in categories.all_categories() if c.is_fhir]
    marked = conn.execute(
        update(agreed).where(agreed.c.category.in_(fhir)).values(parent_version=UNCHECKED)
    ).rowcount
    cleared = conn.execute(
        update(agreed)
        .where(agreed.c.category.not_in(fhir), agreed.c.parent_version.is_not(None))
        .values(parent_version=None)
    ).rowcount
    return int(marked or 0) + int(cleared or 0)


def _to_agreed(row: Any) -> Agreed:
    return Agreed(
        row.category,
        row.uuid,
        row.content_hash,
        bytes(row.body),
        row.state,
        row.parent_version,
        bool(row.pending_push),
    )
