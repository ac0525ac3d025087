"""The record repository: reads, and the one write path (record + event in one transaction).

Every change to a record goes through :func:`write_many`, which appends the matching event in the
caller's transaction. A write that changes nothing (same content, same state) appends nothing, so a
record that travels back to where it came from does not start an echo.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from fhirsync import canonical
from fhirsync import categories as cats
from fhirsync.errors import RecordNotFound, VersionMismatch
from fhirsync.records import Action, ChangeEvent, Record, RecordState, RecordWrite
from fhirsync.store import bulk
from fhirsync.store import events as event_log
from fhirsync.store.tables import records

_CHUNK = 500
_KEY = ("category", "uuid")
_VALUES = ("body", "version", "content_hash", "last_updated", "state", "origin", "via")
_READ_COLUMNS = "category, uuid, body, version, content_hash, last_updated, state, origin"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The stored record after a write, and the event it appended (None if nothing changed)."""

    record: Record
    event: ChangeEvent | None
    created: bool = False
    """The write made the record (new, or back after a purge), whatever state it is in."""


def utcnow() -> datetime:
    """The current time in UTC, to the millisecond (what FHIR ``lastUpdated`` carries)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def fhir_instant(moment: datetime) -> str:
    """An instant as FHIR writes it: ``2026-11-29T01:02:03.456Z``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _to_record(row: Row[Any]) -> Record:
    return Record(
        category=row.category,
        uuid=row.uuid,
        body=row.body,
        version=row.version,
        content_hash=row.content_hash,
        last_updated=row.last_updated.replace(tzinfo=UTC),
        state=row.state,
        origin=row.origin,
    )


def get(conn: Connection, category: str, uuid: str) -> Record | None:
    """The record ``(category, uuid)`` in any state, or None."""
    row = conn.execute(
        select(records).where(records.c.category == category, records.c.uuid == uuid)
    ).first()
    return _to_record(row) if row is not None else None


def get_many(
    conn: Connection, categories: Sequence[str], uuids: Iterable[str], *, for_update: bool = False
) -> dict[str, Record]:
    """Records of ``categories`` with the given uuids, keyed by uuid (any state).

    ``for_update`` locks the rows until the transaction ends (PostgreSQL; SQLite's write
    transactions are already exclusive), so a read-modify-write cannot lose a concurrent change.
    Plain SQL and tuples: every pulled, pushed and written record is read here at least once, and
    Core's row processing cost twice the query (measured ~15 against ~7 µs a row).
    """
    wanted = list(dict.fromkeys(uuids))
    out: dict[str, Record] = {}
    if not categories:
        return out
    # Rows are locked in the order the query returns them: by uuid in code point order (the
    # "C" collation), the order write_many sorts its uuids in.
    lock = (
        ' ORDER BY uuid COLLATE "C" FOR UPDATE'
        if for_update and conn.dialect.name != "sqlite"
        else ""
    )
    in_categories = bulk.placeholders(conn, len(categories))
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        sql = (
            f"SELECT {_READ_COLUMNS} FROM records WHERE category IN ({in_categories}) "
            f"AND uuid IN ({bulk.placeholders(conn, len(chunk))}){lock}"
        )
        for category, uuid, body, version, digest, updated, state, origin in conn.exec_driver_sql(
            sql, (*categories, *chunk)
        ):
            moment = datetime.fromisoformat(updated) if isinstance(updated, str) else updated
            out[uuid] = Record(
                category,
                uuid,
                bytes(body),
                version,
                digest,
                moment.replace(tzinfo=UTC),
                state,
                origin,
            )
    return out


def search(
    conn: Connection,
    categories: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    updated_after: datetime | None = None,
    updated_before: datetime | None = None,
    updated_at_or_after: bool = True,
    after_row: int = 0,
    limit: int = 100,
) -> tuple[list[Record], int | None]:
    """Active records in row order, keyset-paged; returns the page and the cursor for the next."""
    query = select(records).where(
        records.c.category.in_(categories), records.c.state == "active", records.c.id > after_row
    )
    if ids is not None:
        query = query.where(records.c.uuid.in_(list(ids)))
    if updated_after is not None:
        bound = updated_after.astimezone(UTC).replace(tzinfo=None)
        query = query.where(
            records.c.last_updated >= bound
            if updated_at_or_after
            else records.c.last_updated > bound
        )
    if updated_before is not None:
        query = query.where(
            records.c.last_updated < updated_before.astimezone(UTC).replace(tzinfo=None)
        )
    rows = conn.execute(query.order_by(records.c.id).limit(limit + 1)).all()
    page = rows[:limit]
    cursor = int(page[-1].id) if len(rows) > limit else None
    return [_to_record(r) for r in page], cursor


def counts_by_category(conn: Connection) -> dict[str, dict[str, int]]:
    """Number of records per category and state."""
    from sqlalchemy import func

    out: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        select(records.c.category, records.c.state, func.count()).group_by(
            records.c.category, records.c.state
        )
    )
    for category, state, count in rows:
        out.setdefault(category, {})[state] = int(count)
    return out


def _action(old: Record | None, state: RecordState, changed: bool) -> Action | None:
    # A record that is voided or retired after the write (made so, or changed while so) is
    # announced as such: the nodes below fetch the last body of a void, where a CREATED or an
    # UPDATED sends them to read a record the FHIR API answers 410 for, and they skip it.
    inactive: dict[str, Action] = {"voided": "VOIDED", "retired": "RETIRED"}
    if old is None or (old.state == "deleted" and state != "deleted"):
        return inactive.get(state, "CREATED")
    if state == old.state:
        return inactive.get(state, "UPDATED") if changed else None
    transitions: dict[tuple[str, str], Action] = {
        ("active", "voided"): "VOIDED",
        ("active", "retired"): "RETIRED",
        ("voided", "active"): "UNVOIDED",
        ("retired", "active"): "UNRETIRED",
    }
    if state == "deleted":
        return "DELETED"
    return transitions.get((old.state, state), "UPDATED")


def _stamp(
    category: str, uuid: str, body: Mapping[str, Any], version: int, instant: str
) -> dict[str, Any]:
    """The body as stored: our id and, for FHIR, ``meta.versionId``/``meta.lastUpdated``."""
    out = dict(body)
    cat = cats.get(category)
    if cat.is_fhir:
        out["id"] = uuid
        meta = dict(out.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = instant
        out["meta"] = meta
    else:
        out["uuid"] = uuid
    return out


def write_many(
    conn: Connection, writes: Sequence[RecordWrite], *, now: datetime | None = None
) -> list[WriteResult]:
    """Apply ``writes`` in order in the caller's transaction, appending one event per change.

    Raises VersionMismatch when a write's ``expected_version`` is stale and RecordNotFound when a
    state-only write (``body=None``) names a record that does not exist. Either leaves the whole
    transaction to be rolled back by the caller.
    """
    moment = now or utcnow()
    instant = fhir_instant(moment)  # one write time for the whole batch
    when = bulk.db_time(conn, moment)
    current: dict[tuple[str, str], Record] = {}
    by_cat: dict[str, list[str]] = {}
    for w in writes:
        by_cat.setdefault(w.category, []).append(w.uuid)
    # Every writer locks rows in one order (category, then uuid), whatever the order of its
    # writes: on PostgreSQL two Bundles naming the same records in opposite orders otherwise
    # each held one row the other waited for ("deadlock detected").
    for category, uuids in sorted(by_cat.items()):
        for uuid, rec in get_many(conn, [category], sorted(uuids), for_update=True).items():
            current[(category, uuid)] = rec

    results: list[WriteResult] = []
    inserts: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    new_events: list[event_log.NewEvent] = []
    pending: list[tuple[int, Record, bool]] = []
    for w in writes:
        key = (w.category, w.uuid)
        old = current.get(key)
        if w.expected_version is not None and (old is None or old.version != w.expected_version):
            raise VersionMismatch(
                f"{w.category}/{w.uuid} is at version {old.version if old else 'none'}, "
                f"not {w.expected_version}",
                current_version=old.version if old else None,
            )
        if w.body is None:
            if old is None:
                raise RecordNotFound(
                    f"{w.category}/{w.uuid} does not exist", category=w.category, uuid=w.uuid
                )
            body: Mapping[str, Any] = old.resource()
            digest = old.content_hash
        else:
            body = w.body
            digest = canonical.content_hash(body)
        changed = old is None or digest != old.content_hash
        action = _action(old, w.state, changed)
        if action is None and old is not None:
            results.append(WriteResult(old, None))
            continue
        version = 1 if old is None else old.version + 1
        stored = canonical.dumps(_stamp(w.category, w.uuid, body, version, instant))
        rec = Record(w.category, w.uuid, stored, version, digest, moment, w.state, w.origin)
        if old is None:
            inserts.append(
                (w.category, w.uuid, stored, version, digest, when, w.state, w.origin, w.via)
            )
        else:
            updates.append(
                (stored, version, digest, when, w.state, w.origin, w.via, w.category, w.uuid)
            )
        current[key] = rec
        assert action is not None
        new_events.append(event_log.NewEvent(w.category, w.uuid, action, moment, w.origin, w.via))
        made = old is None or (old.state == "deleted" and w.state != "deleted")
        pending.append((len(results), rec, made))
        results.append(WriteResult(rec, None, made))

    # New rows in the same (category, uuid) order as the locks above: two writers creating the
    # same new records in opposite orders otherwise each held one new key the other waited for
    # on PostgreSQL ("deadlock detected"); now the later one waits, then fails on the unique key
    # (``service.fhir.in_write`` runs it again as updates). Events stay in write order.
    inserts.sort(key=lambda row: (row[0], row[1]))
    bulk.insert_rows(conn, records, (*_KEY, *_VALUES), inserts)
    bulk.update_rows(conn, records, _VALUES, _KEY, updates)
    appended = event_log.append(conn, new_events)
    for (index, rec, made), appended_event in zip(pending, appended, strict=True):
        results[index] = WriteResult(rec, appended_event, made)
    return results


def write(conn: Connection, change: RecordWrite, *, now: datetime | None = None) -> WriteResult:
    """Apply one write (see :func:`write_many`)."""
    return write_many(conn, [change], now=now)[0]
