"""Stored conflicts: a record whose local and parent versions could not be merged automatically.

Unlike Sync 2.0 (spec §13.12) the sides are named for what they are on THIS node: ``local`` is
this node's version, ``remote`` the parent's, ``base`` the last agreed one. A record has at most
one open conflict; a newer detection for the same record updates it. A conflict is closed when it
is resolved (who resolved it and how is kept).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, func, insert, select, update

from fhirsync import canonical
from fhirsync.records import RecordState
from fhirsync.store.tables import conflicts

OPEN = "open"
RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class ConflictNote:
    """A conflict to store (or to refresh, when the record already has an open one)."""

    category: str
    record_uuid: str
    operation: str
    base_body: bytes | None
    base_state: RecordState | None
    local_body: bytes
    local_state: RecordState
    remote_body: bytes
    remote_state: RecordState
    remote_version: str | None
    paths: Sequence[str]
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))


@dataclass(frozen=True, slots=True)
class Conflict:
    """One stored conflict."""

    uuid: str
    category: str
    record_uuid: str
    status: str
    operation: str
    base_body: bytes | None
    base_state: RecordState | None
    local_body: bytes
    local_state: RecordState
    remote_body: bytes
    remote_state: RecordState
    remote_version: str | None
    paths: tuple[str, ...]
    detected_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None

    def base(self) -> dict[str, Any] | None:
        """The base body (None when the record had none)."""
        return canonical.loads(self.base_body) if self.base_body is not None else None

    def local(self) -> dict[str, Any]:
        """This node's body."""
        value: dict[str, Any] = canonical.loads(self.local_body)
        return value

    def remote(self) -> dict[str, Any]:
        """The parent's body."""
        value: dict[str, Any] = canonical.loads(self.remote_body)
        return value


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def record_many(conn: Connection, notes: Sequence[ConflictNote], *, now: datetime) -> list[str]:
    """Open (or refresh) a conflict per note; returns the conflict uuids in input order."""
    out: list[str] = []
    for note in notes:
        existing = open_for(conn, note.category, [note.record_uuid]).get(note.record_uuid)
        values = {
            "operation": note.operation,
            "base_body": note.base_body,
            "base_state": note.base_state,
            "local_body": note.local_body,
            "local_state": note.local_state,
            "remote_body": note.remote_body,
            "remote_state": note.remote_state,
            "remote_version": note.remote_version,
            "paths": orjson.dumps(list(note.paths)).decode(),
            "updated_at": _naive(now),
        }
        if existing is not None:
            conn.execute(update(conflicts).where(conflicts.c.uuid == existing.uuid).values(values))
            out.append(existing.uuid)
            continue
        conn.execute(
            insert(conflicts).values(
                uuid=note.uuid,
                category=note.category,
                record_uuid=note.record_uuid,
                status=OPEN,
                detected_at=_naive(now),
                **values,
            )
        )
        out.append(note.uuid)
    return out


def open_for(conn: Connection, category: str, uuids: Iterable[str]) -> dict[str, Conflict]:
    """Open conflicts of these records of ``category`` by record uuid."""
    wanted = list(dict.fromkeys(uuids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(conflicts).where(
            conflicts.c.category == category,
            conflicts.c.record_uuid.in_(wanted),
            conflicts.c.status == OPEN,
        )
    )
    return {r.record_uuid: _to_conflict(r) for r in rows}


def list_conflicts(
    conn: Connection, *, status: str | None = OPEN, limit: int = 200
) -> list[Conflict]:
    """Conflicts (open ones by default), newest first."""
    query = select(conflicts).order_by(conflicts.c.updated_at.desc(), conflicts.c.id.desc())
    if status is not None:
        query = query.where(conflicts.c.status == status)
    return [_to_conflict(r) for r in conn.execute(query.limit(limit))]


def get(conn: Connection, uuid: str) -> Conflict | None:
    """One conflict by its uuid (or by a unique prefix of at least 8 characters), in any case."""
    # Conflict uuids are lower-case. SQLite's LIKE ignores case and PostgreSQL's does not, so a
    # prefix typed in upper case was found on one only; and "_" or "%" in it matched any
    # character, so "________" named the only open conflict (and resolved it).
    wanted = uuid.lower()
    row = conn.execute(select(conflicts).where(conflicts.c.uuid == wanted)).first()
    if row is None and len(wanted) >= 8:
        prefixed = conflicts.c.uuid.startswith(wanted, autoescape=True)
        rows = conn.execute(select(conflicts).where(prefixed).limit(2)).all()
        row = rows[0] if len(rows) == 1 else None
    return _to_conflict(row) if row is not None else None


def count_open(conn: Connection) -> int:
    """Number of open conflicts."""
    query = select(func.count()).select_from(conflicts).where(conflicts.c.status == OPEN)
    return int(conn.execute(query).scalar() or 0)


def close(conn: Connection, uuid: str, *, resolved_by: str, resolution: str, now: datetime) -> bool:
    """Mark an open conflict resolved by ``resolved_by`` (``local``, ``remote``, ``merged``, ...).

    False when it was no longer open (closed by another transaction since it was read): two
    resolutions of one conflict at once must not both succeed, the second overwriting the first.
    """
    done = conn.execute(
        update(conflicts)
        .where(conflicts.c.uuid == uuid, conflicts.c.status == OPEN)
        .values(
            status=RESOLVED, resolved_at=_naive(now), resolved_by=resolved_by, resolution=resolution
        )
    )
    return done.rowcount == 1


def forget_remote_versions(conn: Connection) -> int:
    """Forget the parent's version held by every open conflict (the node moved to another
    parent, where it means nothing: a resolution would send it up as ``If-Match``)."""
    done = conn.execute(
        update(conflicts)
        .where(conflicts.c.status == OPEN, conflicts.c.remote_version.is_not(None))
        .values(remote_version=None)
    )
    return int(done.rowcount or 0)


def _to_conflict(row: Any) -> Conflict:
    return Conflict(
        uuid=row.uuid,
        category=row.category,
        record_uuid=row.record_uuid,
        status=row.status,
        operation=row.operation,
        base_body=bytes(row.base_body) if row.base_body is not None else None,
        base_state=row.base_state,
        local_body=bytes(row.local_body),
        local_state=row.local_state,
        remote_body=bytes(row.remote_body),
        remote_state=row.remote_state,
        remote_version=row.remote_version,
        paths=tuple(orjson.loads(row.paths)),
        detected_at=row.detected_at.replace(tzinfo=UTC),
        updated_at=row.updated_at.replace(tzinfo=UTC),
        resolved_at=row.resolved_at.replace(tzinfo=UTC) if row.resolved_at else None,
        resolved_by=row.resolved_by,
        resolution=row.resolution,
    )
