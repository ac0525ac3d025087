"""The FHIR R4 API's work: read, create, update, delete, search and the CapabilityStatement.

Routers parse HTTP and render; everything else happens here, on a SQLAlchemy connection the caller
owns (so a transaction Bundle can run many of these in one database transaction). Bodies are served
as stored: they already carry ``id``, ``meta.versionId`` and ``meta.lastUpdated``.
"""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from fhirsync import __version__, categories
from fhirsync.categories import ENCOUNTER_TAG_SYSTEM, FHIR_BASE, Category
from fhirsync.errors import (
    ConflictError,
    InvalidResource,
    RecordGone,
    RecordNotFound,
    RequestError,
)
from fhirsync.records import Record, RecordWrite
from fhirsync.service.authors import Author
from fhirsync.service.validation import normalize_resource
from fhirsync.store import records as store
from fhirsync.store.engine import Database
from fhirsync.store.records import WriteResult, fhir_instant, utcnow
from fhirsync.store.tables import MAX_ROW_ID

FHIR_JSON = "application/fhir+json"
DEFAULT_COUNT = 100
MAX_SEARCH_IDS = 10_000
"""Most ids one ``_id`` search takes: each is a query parameter, and PostgreSQL takes at most
65,535 (a batch fetch sends ``fetch_batch_size``, at most 1,000)."""
_SEARCH_PARAMS = frozenset({"_id", "_lastUpdated", "_count", "_cursor", "_format"})
_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """A write's stored record and whether it created the resource (201) or changed it (200)."""

    record: Record
    created: bool


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed type search."""

    ids: tuple[str, ...] | None = None
    updated_from: datetime | None = None
    updated_before: datetime | None = None
    count: int = DEFAULT_COUNT
    cursor: int = 0


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of matches and the cursor of the next page (None on the last)."""

    records: list[Record]
    next_cursor: int | None


# --- types, ids and bodies ------------------------------------------------------------------------


def categories_of(resource_type: str) -> list[Category]:
    """The categories stored as ``resource_type``; UnknownResourceType (404) if none."""
    return categories.for_fhir_type(resource_type)


def parse_json_object(raw: bytes, element: str) -> dict[str, Any]:
    """The JSON object in ``raw``; InvalidResource naming ``element`` if it is not one."""
    if not raw.strip():
        raise InvalidResource("The request body is empty", element=element)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidResource(
            f"The request body is not valid JSON: {exc}", element=element
        ) from exc
    if not isinstance(value, dict):
        raise InvalidResource("The request body must be a JSON object", element=element)
    return value


def check_id(resource_type: str, resource_id: str) -> None:
    """InvalidResource when ``resource_id`` is not a legal FHIR id."""
    if not categories.is_valid_id(resource_id):
        raise InvalidResource(f"{resource_id!r} is not a valid id", element=f"{resource_type}.id")


def prepare(resource_type: str, resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """Validate ``resource`` as a ``resource_type`` served here; the body to store."""
    categories_of(resource_type)
    return normalize_resource(resource, resource_type)


def parse_if_match(header: str | None) -> int | None:
    """The version in ``If-Match: W/"3"`` (or ``"3"``, ``3``); RequestError if unreadable."""
    if header is None or not header.strip():
        return None
    value = header.strip()
    value = value.removeprefix("W/").strip('"')
    if not _is_number(value):
        raise RequestError(f'If-Match {header!r} is not a version tag like W/"3"')
    return int(value)


def etag(record: Record) -> str:
    """The weak ETag of a record's version."""
    return f'W/"{record.version}"'


def location(resource_type: str, record: Record) -> str:
    """``{Type}/{id}/_history/{version}`` (relative to the FHIR base)."""
    return f"{resource_type}/{record.uuid}/_history/{record.version}"


# --- read and write -------------------------------------------------------------------------------


def find(conn: Connection, resource_type: str, resource_id: str) -> Record | None:
    """The stored record of ``resource_type/resource_id`` in any state, or None."""
    names = [c.name for c in categories_of(resource_type)]
    found = store.get_many(conn, names, [resource_id])
    return found.get(resource_id)


def read(conn: Connection, resource_type: str, resource_id: str) -> Record:
    """The active record; RecordNotFound (404) if absent, RecordGone (410) if deleted."""
    record = find(conn, resource_type, resource_id)
    if record is None:
        raise RecordNotFound(
            f"{resource_type}/{resource_id} does not exist", uuid=resource_id, category=None
        )
    if not record.is_active:
        raise RecordGone(
            f"{resource_type}/{resource_id} was {record.state}",
            uuid=resource_id,
            category=record.category,
        )
    return record


def create_write(
    resource_type: str, resource: Mapping[str, Any], author: Author, new_id: str | None = None
) -> RecordWrite:
    """The store write that creates ``resource`` (already prepared) under a new uuid4 id."""
    resource_id = new_id or str(uuid_lib.uuid4())
    body = {**resource, "id": resource_id}
    category = categories.for_fhir_resource(body)
    return RecordWrite(category.name, resource_id, body, author.origin, via=author.via)


_T = TypeVar("_T")


def in_write(db: Database, work: Callable[[Connection], _T]) -> _T:
    """``work`` in one write transaction, run once more if a record it inserts was inserted by a
    concurrent request meanwhile; ConflictError if that happens again.

    On PostgreSQL two requests PUTting one new id both find no record (each statement reads
    committed rows, and there is no row to lock yet), and the second insert fails on the unique
    key: a 500. The second run finds the record and updates it, as SQLite, which serialises
    writers, always did.
    """
    try:
        with db.write() as conn:
            return work(conn)
    except IntegrityError:
        pass
    try:
        with db.write() as conn:
            return work(conn)
    except IntegrityError as exc:
        raise ConflictError("a record of this request is being written concurrently") from exc


def update_write(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    resource: Mapping[str, Any],
    author: Author,
    *,
    expected_version: int | None = None,
) -> RecordWrite:
    """The store write that upserts ``resource`` (already prepared) under the client's id."""
    check_id(resource_type, resource_id)
    body_id = resource.get("id")
    if body_id is not None and body_id != resource_id:
        raise InvalidResource(
            f"The body's id {body_id!r} differs from the URL's id {resource_id!r}",
            element=f"{resource_type}.id",
        )
    # Prepared bodies are not shared: one that already names the id is stored as it is.
    body = resource if body_id == resource_id else {**resource, "id": resource_id}
    category = _category_for_update(conn, resource_type, resource_id, body)
    return RecordWrite(
        category.name,
        resource_id,
        body,
        author.origin,
        state="active",
        expected_version=expected_version,
        via=author.via,
    )


def delete_write(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    author: Author,
    expected_version: int | None = None,
) -> RecordWrite | None:
    """The store write that voids/retires the record; None if it is already gone."""
    record = find(conn, resource_type, resource_id)
    if record is None:
        raise RecordNotFound(f"{resource_type}/{resource_id} does not exist", uuid=resource_id)
    if not record.is_active and expected_version is None:
        return None
    state = categories.get(record.category).delete_state
    return RecordWrite(
        record.category,
        resource_id,
        None,
        author.origin,
        state=state,
        expected_version=expected_version,
        via=author.via,
    )


def outcome(result: WriteResult) -> WriteOutcome:
    """A store write result as the API reports it."""
    return WriteOutcome(result.record, result.created)


def create(
    conn: Connection, resource_type: str, resource: Mapping[str, Any], author: Author
) -> WriteOutcome:
    """POST: validate and store under a new id (a client id is ignored)."""
    prepared = prepare(resource_type, resource)
    return outcome(store.write(conn, create_write(resource_type, prepared, author)))


def update(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    resource: Mapping[str, Any],
    author: Author,
    *,
    expected_version: int | None = None,
) -> WriteOutcome:
    """PUT: validate and upsert, keeping the client's id; a voided record becomes active again."""
    prepared = prepare(resource_type, resource)
    change = update_write(
        conn, resource_type, resource_id, prepared, author, expected_version=expected_version
    )
    return outcome(store.write(conn, change))


def delete(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    author: Author,
    expected_version: int | None = None,
) -> Record | None:
    """DELETE: void or retire (history kept); None when it was already gone."""
    change = delete_write(conn, resource_type, resource_id, author, expected_version)
    if change is None:
        return None
    return store.write(conn, change).record


def _category_for_update(
    conn: Connection, resource_type: str, resource_id: str, body: Mapping[str, Any]
) -> Category:
    cats = categories_of(resource_type)
    if len(cats) == 1:
        return cats[0]
    # Encounter: a visit stays a visit when a client leaves out the tag; a tag that names the
    # other category is refused, because the store keys records by (category, id).
    existing = find(conn, resource_type, resource_id)
    wanted = categories.for_fhir_resource(body)
    if existing is None:
        return wanted
    if _has_category_tag(body) and wanted.name != existing.category:
        raise InvalidResource(
            f"{resource_type}/{resource_id} is stored as a {existing.category}; "
            f"its meta.tag cannot make it a {wanted.name}",
            element=f"{resource_type}.meta.tag",
        )
    return categories.get(existing.category)


def _has_category_tag(body: Mapping[str, Any]) -> bool:
    meta = body.get("meta")
    tags = meta.get("tag") if isinstance(meta, Mapping) else None
    return isinstance(tags, list) and any(
        isinstance(t, Mapping) and t.get("system") == ENCOUNTER_TAG_SYSTEM for t in tags
    )


# --- search ---------------------------------------------------------------------------------------


def parse_search(params: Sequence[tuple[str, str]], max_count: int) -> SearchQuery:
    """Parse ``_id``, ``_lastUpdated``, ``_count`` and ``_cursor``; RequestError names a bad one."""
    ids: set[str] | None = None
    lower: datetime | None = None
    upper: datetime | None = None
    count: int | None = None
    cursor = 0
    for name, value in params:
        if name not in _SEARCH_PARAMS:
            raise InvalidResource(
                f"Unknown search parameter {name!r} "
                f"(supported: {', '.join(sorted(_SEARCH_PARAMS))})",
                element=name,
            )
        if name == "_id":
            wanted = {v.strip() for v in value.split(",") if v.strip()}
            if len(wanted) > MAX_SEARCH_IDS:
                raise InvalidResource(
                    f"_id names {len(wanted)} ids; a search takes at most {MAX_SEARCH_IDS}",
                    element="_id",
                )
            for one in wanted:
                if not categories.is_valid_id(one):
                    raise InvalidResource(f"_id {one!r} is not a valid id", element="_id")
            ids = wanted if ids is None else ids & wanted
        elif name == "_lastUpdated":
            start, end = _date_bounds(value)
            lower = start if lower is None or (start and start > lower) else lower
            upper = end if upper is None or (end and end < upper) else upper
        elif name == "_count":
            count = min(_non_negative(name, value), max_count)
        elif name == "_cursor":
            # No row id is larger, and the databases refuse a larger number: past it there is
            # nothing to find.
            cursor = min(_non_negative(name, value), MAX_ROW_ID)
        elif value not in _JSON_FORMATS:
            raise InvalidResource(f"_format {value!r} is not supported (JSON only)", element=name)
    if count is None:
        # A batch fetch by _id gets all its ids on one page unless it asks otherwise.
        size = len(ids) if ids is not None else DEFAULT_COUNT
        count = min(max(size, 1), max_count)
    return SearchQuery(
        ids=tuple(sorted(ids)) if ids is not None else None,
        updated_from=lower,
        updated_before=upper,
        count=count,
        cursor=cursor,
    )


def search(conn: Connection, resource_type: str, query: SearchQuery) -> SearchPage:
    """Active records of ``resource_type`` (all its categories) matching ``query``, keyset-paged."""
    names = [c.name for c in categories_of(resource_type)]
    if query.count == 0 or (query.ids is not None and not query.ids):
        return SearchPage([], None)
    found, cursor = store.search(
        conn,
        names,
        ids=query.ids,
        updated_after=query.updated_from,
        updated_before=query.updated_before,
        updated_at_or_after=True,
        after_row=query.cursor,
        limit=query.count,
    )
    return SearchPage(found, cursor)


def searchset(
    base_url: str,
    resource_type: str,
    page: SearchPage,
    params: Sequence[tuple[str, str]],
) -> bytes:
    """The searchset Bundle of one page, spliced from the stored bodies (no re-serialisation)."""
    type_url = f"{base_url}{FHIR_BASE}/{resource_type}"
    kept = [(k, v) for k, v in params if k != "_cursor"]
    links = [{"relation": "self", "url": _with_query(type_url, params)}]
    if page.next_cursor is not None:
        next_params = [*kept, ("_cursor", str(page.next_cursor))]
        links.append({"relation": "next", "url": _with_query(type_url, next_params)})
    head = {
        "resourceType": "Bundle",
        "id": str(uuid_lib.uuid4()),
        "meta": {"lastUpdated": fhir_instant(utcnow())},
        "type": "searchset",
        "link": links,
    }
    prefix = type_url.encode() + b"/"
    entries = b",".join(
        b'{"fullUrl":"'
        + prefix
        + rec.uuid.encode()
        + b'","resource":'
        + rec.body
        + b',"search":{"mode":"match"}}'
        for rec in page.records
    )
    return orjson.dumps(head)[:-1] + b',"entry":[' + entries + b"]}"


def _with_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    return f"{url}?{urlencode(list(params))}" if params else url


def _is_number(text: str) -> bool:
    # str.isdigit() alone also accepts digits such as "²" that int() refuses.
    return text.isascii() and text.isdigit()


def _non_negative(name: str, value: str) -> int:
    if not _is_number(value):
        raise InvalidResource(f"{name} must be a non-negative integer, not {value!r}", element=name)
    return int(value)


_PREFIXES = ("ge", "gt", "le", "lt", "eq", "sa", "eb")
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _date_bounds(value: str) -> tuple[datetime | None, datetime | None]:
    """``_lastUpdated`` as [from, before) bounds, honouring the value's precision (FHIR dates)."""
    # An unencoded "+" of a UTC offset arrives as a space after URL decoding.
    value = value.strip().replace(" ", "+")
    prefix, text = ("eq", value)
    if value[:2] in _PREFIXES:
        prefix, text = value[:2], value[2:]
    start, end = _date_range(text)
    if prefix in ("ge",):
        return start, None
    if prefix in ("gt", "sa"):
        return end, None
    if prefix in ("lt", "eb"):
        return None, start
    if prefix == "le":
        return None, end
    return start, end


def _date_range(text: str) -> tuple[datetime, datetime]:
    """The instant ``text`` starts at and the one after its precision ends (2020-05 → June 1)."""
    try:
        moment, step = _date_and_step(text)
    except ValueError as exc:
        raise InvalidResource(
            f"_lastUpdated {text!r} is not a FHIR date or dateTime", element="_lastUpdated"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # FHIR names instants from year 1 to 9999; Python holds the same range in UTC only, so the
    # first and last of them (in a time zone, or with what follows their precision) are clamped.
    try:
        start = moment.astimezone(UTC)
    except OverflowError:
        start = _EARLIEST if moment.year == 1 else _LATEST
    try:
        end = step(start)
    except (OverflowError, ValueError):
        end = _LATEST
    return start, end


def _date_and_step(text: str) -> tuple[datetime, Callable[[datetime], datetime]]:
    """The moment ``text`` names and how to get from it to the end of its precision."""
    if len(text) == 4 and text.isascii() and text.isdigit():
        return datetime(int(text), 1, 1), lambda start: start.replace(year=start.year + 1)
    if len(text) == 7:
        month = datetime.strptime(text, "%Y-%m")
        return month, lambda start: (start + timedelta(days=32)).replace(day=1)
    if len(text) == 10:
        return datetime.strptime(text, "%Y-%m-%d"), lambda start: start + timedelta(days=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    clock = text.partition("T")[2][:8]
    if "." in text:
        step = timedelta(milliseconds=1)
    elif clock.count(":") == 1:  # hh:mm (FHIR allows minute precision in searches)
        step = timedelta(minutes=1)
    else:
        step = timedelta(seconds=1)
    return moment, lambda start: start + step


# --- capability statement -------------------------------------------------------------------------


def capability_statement(base_url: str) -> dict[str, Any]:
    """The node's CapabilityStatement: one rest.resource per served type."""
    interactions = [
        {"code": code} for code in ("read", "create", "update", "delete", "search-type")
    ]
    resources = [
        {
            "type": resource_type,
            "versioning": "versioned",
            "readHistory": False,
            "updateCreate": True,
            "conditionalCreate": False,
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
            "interaction": interactions,
            "searchParam": [
                {"name": "_id", "type": "token"},
                {"name": "_lastUpdated", "type": "date"},
            ],
        }
        for resource_type in categories.FHIR_TYPES
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": fhir_instant(utcnow()),
        "kind": "instance",
        "software": {"name": "fhirsync", "version": __version__},
        "implementation": {
            "description": "fhirsync node (OpenMRS Sync 2.0)",
            "url": f"{base_url}{FHIR_BASE}",
        },
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": "batch"}, {"code": "transaction"}],
            }
        ],
    }


def operation_outcome(
    message: str, *, code: str = "invalid", element: str | None = None, severity: str = "error"
) -> dict[str, Any]:
    """An OperationOutcome with one issue (for batch-response entries)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
    if element:
        issue["expression"] = [element]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
