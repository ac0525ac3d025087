"""OpenMRS REST v1 operations on the metadata categories with no FHIR form.

What the REST router calls. The request is resolved in :mod:`~fhirsync.service.rest_request`, a
body is checked and turned into its stored form in :mod:`~fhirsync.service.rest_body`, ``If-Match``
is decided in :mod:`~fhirsync.service.rest_versions` and records are served as
:mod:`~fhirsync.service.rest_render` builds them; this module reads and writes the store. The names
of those modules that the router and ``sync/`` use are importable from here too.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from fhirsync import categories as cats
from fhirsync.categories import ORIGIN_HEADER, Category
from fhirsync.errors import ConflictError, CreatedMeanwhile, InvalidResource, RecordNotFound
from fhirsync.records import Record, RecordState, RecordWrite
from fhirsync.service.authors import Author, author_for
from fhirsync.service.rest_body import split_representation, validate
from fhirsync.service.rest_render import View, page_links, representation
from fhirsync.service.rest_request import category_for, parse_body, parse_view
from fhirsync.service.rest_versions import check_if_match, entity_tag, parse_if_match
from fhirsync.store import records
from fhirsync.store.engine import Database
from fhirsync.store.tables import records as records_table

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "ORIGIN_HEADER",
    "Author",
    "View",
    "author_for",
    "category_for",
    "check_if_match",
    "create",
    "delete",
    "entity_tag",
    "list_page",
    "parse_body",
    "parse_if_match",
    "parse_view",
    "read",
    "split_representation",
    "update",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
# SQLite refuses a larger OFFSET (PostgreSQL's is a BIGINT too); no table holds that many rows.
_MAX_OFFSET = 2**63 - 1


def _current(conn: Connection, category: Category, uuid: str) -> Record | None:
    """The record in a write transaction, its row locked until commit.

    On PostgreSQL (read committed) two concurrent merges would otherwise both start from the same
    version and the later would drop the earlier's fields. The lock and the read are one
    statement: locking first and reading after let a record created in between be read unlocked,
    and a merge from it then failed with 412 against a concurrent one (no If-Match was given).
    SQLite write transactions are already serialised by BEGIN IMMEDIATE.
    """
    return records.get_many(conn, [category.name], [uuid], for_update=True).get(uuid)


def _live(conn: Connection, category: Category, uuid: str, *, lock: bool = False) -> Record:
    """The record unless it is missing or purged; RecordNotFound otherwise."""
    rec = _current(conn, category, uuid) if lock else records.get(conn, category.name, uuid)
    if rec is None or rec.state == "deleted":
        raise RecordNotFound(
            f"{category.rest_resource}/{uuid} does not exist", category=category.name, uuid=uuid
        )
    return rec


def read(db: Database, category: Category, uuid: str, view: View, base_url: str) -> dict[str, Any]:
    """One record's representation; retired/voided ones too; RecordNotFound if missing or purged."""
    with db.read() as conn:
        rec = _live(conn, category, uuid)
    return representation(category, rec, view, base_url)


def list_page(
    db: Database,
    category: Category,
    *,
    view: View,
    base_url: str,
    start_index: int = 0,
    limit: int = DEFAULT_LIMIT,
    include_all: bool = False,
) -> dict[str, Any]:
    """``{"results": [...]}`` of active records (retired ones too with ``include_all``), in
    insertion order, with ``next``/``prev`` links as OpenMRS pages them."""
    if start_index < 0:
        raise InvalidResource("startIndex must not be negative", element="startIndex")
    if limit < 1:
        raise InvalidResource("limit must be at least 1", element="limit")
    limit = min(limit, MAX_LIMIT)
    states = ("active", "retired", "voided") if include_all else ("active",)
    query = (
        select(records_table.c.uuid)
        .where(records_table.c.category == category.name, records_table.c.state.in_(states))
        .order_by(records_table.c.id)
        .offset(min(start_index, _MAX_OFFSET))
        .limit(limit + 1)
    )
    with db.read() as conn:
        uuids = [str(u) for u in conn.execute(query).scalars()]
        found = records.get_many(conn, [category.name], uuids[:limit])
    page = [found[u] for u in uuids[:limit] if u in found]
    out: dict[str, Any] = {
        "results": [representation(category, rec, view, base_url) for rec in page]
    }
    links = page_links(
        category,
        base_url,
        start=start_index,
        limit=limit,
        view=view,
        include_all=include_all,
        fetched=len(uuids),
    )
    if links:
        out["links"] = links
    return out


@dataclass(frozen=True, slots=True)
class _Change:
    """A request body as a change: fields to set, fields to remove (null), the state asked for."""

    body: dict[str, Any]
    removed: frozenset[str]
    state: RecordState | None

    @classmethod
    def of(cls, category: Category, payload: Mapping[str, Any]) -> _Change:
        body, state = split_representation(category, payload)
        return cls(body, frozenset(k for k, v in payload.items() if v is None), state)


def create(
    db: Database,
    category: Category,
    payload: Mapping[str, Any],
    author: Author,
    base_url: str,
    *,
    if_match: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Create a record from ``payload``, keeping its ``uuid`` (uuids are shared across nodes).

    A uuid that already exists (and is not purged) updates that record instead, so a sync that
    sends the same create twice is harmless; ``if_match`` (:func:`check_if_match`) guards that
    update. Returns the full representation and whether a record was created.
    """
    given = payload.get("uuid")
    if given is None:
        uuid = str(uuidlib.uuid4())
    elif isinstance(given, str) and cats.is_valid_id(given):
        uuid = given
    else:
        raise InvalidResource(
            "uuid must be a string of letters, digits, '-' or '.'", element="uuid"
        )
    change = _Change.of(category, payload)
    try:
        rec, created = _create_once(db, category, uuid, change, author, if_match)
    except (IntegrityError, CreatedMeanwhile):
        # Another request inserted this uuid (or the category's first feed counter) after we
        # looked: on PostgreSQL a unique violation, or a row our write would have replaced.
        # Once more sees that row and merges.
        try:
            rec, created = _create_once(db, category, uuid, change, author, if_match)
        except (IntegrityError, CreatedMeanwhile) as exc:
            message = f"{category.rest_resource}/{uuid} is being written concurrently"
            raise ConflictError(message) from exc
    return representation(category, rec, "full", base_url), created


def _create_once(
    db: Database,
    category: Category,
    uuid: str,
    change: _Change,
    author: Author,
    if_match: str | None,
) -> tuple[Record, bool]:
    with db.write() as conn:
        old = _current(conn, category, uuid)
        check_if_match(category, uuid, old, if_match)
        if old is not None and old.state != "deleted":
            return _merge_and_write(conn, category, old, change, author), False
        validate(category, change.body)
        write = RecordWrite(
            category.name,
            uuid,
            change.body,
            author.origin,
            change.state or "active",
            via=author.via,
        )
        result = records.write(conn, write)
        if not result.created:
            # PostgreSQL reads each statement afresh: the record appeared after we looked, and
            # this write replaced it. Roll back; the retry merges into it instead.
            raise CreatedMeanwhile(f"{category.name}/{uuid} was created meanwhile")
        return result.record, True


def update(
    db: Database,
    category: Category,
    uuid: str,
    payload: Mapping[str, Any],
    *,
    author: Author,
    base_url: str,
    if_match: str | None = None,
) -> dict[str, Any]:
    """Merge ``payload``'s fields into the stored record (OpenMRS semantics).

    ``retired``/``voided`` false restores a retired/voided record, true retires/voids it; a null
    field removes it. RecordNotFound if the record is missing or purged (never a silent success);
    VersionMismatch when ``if_match`` is stale.
    """
    given = payload.get("uuid")
    if given is not None and given != uuid:
        raise InvalidResource("uuid in the body does not match the path", element="uuid")
    change = _Change.of(category, payload)
    with db.write() as conn:
        old = _live(conn, category, uuid, lock=True)
        check_if_match(category, uuid, old, if_match)
        rec = _merge_and_write(conn, category, old, change, author)
    return representation(category, rec, "full", base_url)


def _merge_and_write(
    conn: Connection, category: Category, old: Record, change: _Change, author: Author
) -> Record:
    merged = {k: v for k, v in old.resource().items() if k not in change.removed}
    merged.update(change.body)
    validate(category, merged)
    write = RecordWrite(
        category.name,
        old.uuid,
        merged,
        author.origin,
        change.state or old.state,
        expected_version=old.version,
        via=author.via,
    )
    return records.write(conn, write).record


def delete(
    db: Database,
    category: Category,
    uuid: str,
    author: Author,
    *,
    purge: bool,
    if_match: str | None = None,
) -> None:
    """Retire or void a record (keeping its body), or purge it (a later read is a 404).

    The store appends RETIRED/VOIDED or DELETED; retiring a retired record appends nothing.
    RecordNotFound if the record is missing or already purged; VersionMismatch when ``if_match``
    is stale (a void against an edit made since that version is refused, not applied). A
    ``reason`` is not stored: it would change the content hash, and a peer retiring the same
    record (spec §5.4 sends no reason) must end with the same bytes.
    """
    with db.write() as conn:
        old = _live(conn, category, uuid, lock=True)
        check_if_match(category, uuid, old, if_match)
        state: RecordState = "deleted" if purge else category.delete_state
        records.write(
            conn, RecordWrite(category.name, uuid, None, author.origin, state, via=author.via)
        )
