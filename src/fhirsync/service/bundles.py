"""Batch and transaction Bundles posted to the FHIR base (``POST /ws/fhir2/R4``).

- ``batch``: every entry on its own (its own database transaction); a failing entry answers with
  its status and an OperationOutcome, the others are unaffected.
- ``transaction``: all or nothing, in ONE database transaction with one ``write_many``. Entries are
  processed in FHIR's order (DELETE, POST, PUT, then GET). ``urn:uuid:`` fullUrls of POST entries
  get new ids, and every ``reference`` to them in the Bundle is rewritten to ``Type/id``; PUT
  entries keep their ids. Any failing entry raises, so the caller answers with that error.

The HTTP status of an error is the server's business: the caller passes ``status_for``.
"""

from __future__ import annotations

import functools
import uuid as uuid_lib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Connection

from fhirsync.categories import FHIR_BASE, is_valid_id
from fhirsync.errors import FhirsyncError, Forbidden, InvalidResource, RecordError, RequestError
from fhirsync.records import Record, RecordWrite
from fhirsync.runtime import bulk_settings
from fhirsync.service import fhir
from fhirsync.service.authors import Author
from fhirsync.store import records as store
from fhirsync.store.engine import Database

StatusFor = Callable[[FhirsyncError], int]
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}
_ISSUE_CODE = {400: "invalid", 403: "forbidden", 404: "not-found", 410: "deleted", 412: "conflict"}


@dataclass(frozen=True)
class BundleContext:
    """What processing a Bundle needs besides the Bundle."""

    db: Database
    author: Author
    can_write: bool
    base_url: str
    max_count: int
    status_for: StatusFor


@dataclass
class _Entry:
    index: int
    method: str
    resource_type: str
    resource_id: str | None = None
    query: list[tuple[str, str]] | None = None
    resource: Mapping[str, Any] | None = None
    if_match: int | None = None
    full_url: str | None = None
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def process(raw: bytes, ctx: BundleContext) -> bytes:
    """Process a posted batch or transaction Bundle; the response Bundle's JSON bytes."""
    # A pushed batch of 500 Patients is some 50,000 live dicts until its transaction ends: with
    # the default gc thresholds they set off full collections of the whole server heap (the FHIR
    # models make it large), measured over 40% of the CPU of processing such Bundles.
    with bulk_settings():
        return _process(raw, ctx)


def _process(raw: bytes, ctx: BundleContext) -> bytes:
    bundle = fhir.parse_json_object(raw, "Bundle")
    if bundle.get("resourceType") != "Bundle":
        raise InvalidResource("POST to the FHIR base takes a Bundle", element="resourceType")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidResource(
            f"Bundle.type must be batch or transaction, not {kind!r}", element="Bundle.type"
        )
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise InvalidResource("Bundle.entry must be a list", element="Bundle.entry")
    process_entries = _batch if kind == "batch" else _transaction
    responses = process_entries(raw_entries, ctx)
    out = {
        "resourceType": "Bundle",
        "id": str(uuid_lib.uuid4()),
        "type": f"{kind}-response",
        "entry": responses,
    }
    return orjson.dumps(out)


# --- parsing entries ------------------------------------------------------------------------------


def _parse_entry(index: int, raw: Any, ctx: BundleContext) -> _Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidResource("A Bundle entry must be an object", element=where)
    request = raw.get("request")
    if not isinstance(request, Mapping):
        raise InvalidResource("The entry has no request", element=f"{where}.request")
    method = request.get("method")
    if not isinstance(method, str) or method not in _ORDER:
        raise InvalidResource(
            f"request.method {method!r} is not supported (GET, POST, PUT, DELETE)",
            element=f"{where}.request.method",
        )
    if method != "GET" and not ctx.can_write:
        raise Forbidden("This user may only read")
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidResource("request.url is missing", element=f"{where}.request.url")
    path, _, query = _relative(url).partition("?")
    parts = [p for p in path.split("/") if p]
    entry = _Entry(index, method, parts[0] if parts else "")
    entry.full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    _shape_url(entry, parts, query, f"{where}.request.url")
    try:
        fhir.categories_of(entry.resource_type)
    except FhirsyncError as exc:
        raise _in_entry(exc, entry) from None
    if method in ("POST", "PUT"):
        resource = raw.get("resource")
        if not isinstance(resource, Mapping):
            raise InvalidResource("The entry has no resource", element=f"{where}.resource")
        entry.resource = resource
    entry.if_match = _if_match(request.get("ifMatch"), f"{where}.request.ifMatch")
    return entry


def _if_match(value: Any, element: str) -> int | None:
    """The version ``request.ifMatch`` names. One that cannot be read is an error, never ignored:
    the write would go through without the precondition the client asked for."""
    if value is not None and not isinstance(value, str):
        raise InvalidResource('request.ifMatch must be a string such as W/"3"', element=element)
    try:
        return fhir.parse_if_match(value)
    except RequestError as exc:
        raise InvalidResource(exc.message, element=element) from None


def _relative(url: str) -> str:
    marker = FHIR_BASE + "/"
    if marker in url:
        return url.split(marker, 1)[1]
    return url.lstrip("/")


def _shape_url(entry: _Entry, parts: list[str], query: str, element: str) -> None:
    method = entry.method
    if method == "GET" and len(parts) == 1:
        entry.query = parse_qsl(query, keep_blank_values=True)
        return
    if query:
        raise InvalidResource("Conditional operations are not supported", element=element)
    if method == "POST" and len(parts) == 1:
        return
    if method in ("GET", "PUT", "DELETE") and len(parts) == 2:
        entry.resource_id = parts[1]
        if not is_valid_id(parts[1]):
            raise InvalidResource(f"{parts[1]!r} is not a valid id", element=element)
        return
    raise InvalidResource(f"request.url does not fit a {method}", element=element)


# --- batch ----------------------------------------------------------------------------------------


def _batch(raw_entries: list[Any], ctx: BundleContext) -> list[dict[str, Any]]:
    responses = []
    for index, raw in enumerate(raw_entries):
        try:
            entry = _parse_entry(index, raw, ctx)
            if entry.resource is not None:
                entry.resource = _prepare(entry)
            if entry.method == "GET":
                with ctx.db.read() as conn:
                    _get(conn, entry, ctx)
            else:
                fhir.in_write(ctx.db, functools.partial(_write_one, entry=entry, ctx=ctx))
            responses.append(entry.response)
        except FhirsyncError as exc:
            responses.append(_error_entry(exc, ctx.status_for(exc)))
    return responses


def _write_one(conn: Connection, entry: _Entry, ctx: BundleContext) -> None:
    change = _change(conn, entry, ctx.author, new_id=None)
    if change is None:
        entry.response = _response(HTTPStatus.NO_CONTENT)
        return
    _respond_to_write(entry, store.write(conn, change))


def _error_entry(exc: FhirsyncError, status: int) -> dict[str, Any]:
    outcome = fhir.operation_outcome(
        exc.message,
        code=_ISSUE_CODE.get(status, "exception"),
        element=getattr(exc, "element", None),
    )
    return {"response": {"status": _status_line(status), "outcome": outcome}}


# --- transaction ----------------------------------------------------------------------------------


def _transaction(raw_entries: list[Any], ctx: BundleContext) -> list[dict[str, Any]]:
    entries = [_parse_entry(i, raw, ctx) for i, raw in enumerate(raw_entries)]
    _check_full_urls(entries)
    new_ids = _assign_ids(entries)
    refs = _references(entries, new_ids)
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        if entry.resource is not None:
            entry.resource = _prepare(entry, refs)
        target = entry.resource_id or new_ids.get(entry.index)
        if entry.method != "GET" and target is not None:
            key = (entry.resource_type, target)
            if key in seen:
                raise InvalidResource(
                    f"{entry.resource_type}/{target} appears twice in the transaction",
                    element=f"{entry.where}.request.url",
                )
            seen.add(key)
    ordered = sorted(entries, key=lambda e: (_ORDER[e.method], e.index))

    def apply(conn: Connection) -> None:
        _apply_writes(conn, [e for e in ordered if e.method != "GET"], new_ids, ctx)
        for entry in ordered:
            if entry.method == "GET":
                _get(conn, entry, ctx)

    fhir.in_write(ctx.db, apply)
    return [e.response for e in entries]


def _check_full_urls(entries: list[_Entry]) -> None:
    """InvalidResource when two entries share a fullUrl: a reference to it would be ambiguous."""
    seen: set[str] = set()
    for entry in entries:
        if entry.full_url is None:
            continue
        if entry.full_url in seen:
            raise InvalidResource(
                f"{entry.where}: fullUrl {entry.full_url!r} appears twice in the transaction",
                element=f"{entry.where}.fullUrl",
            )
        seen.add(entry.full_url)


def _assign_ids(entries: list[_Entry]) -> dict[int, str]:
    """New ids for POST entries (by entry index)."""
    return {e.index: str(uuid_lib.uuid4()) for e in entries if e.method == "POST"}


def _references(entries: list[_Entry], new_ids: Mapping[int, str]) -> dict[str, str]:
    """``urn:uuid:...`` fullUrl → ``Type/id`` for the POST and PUT entries that name one."""
    out: dict[str, str] = {}
    for entry in entries:
        target = new_ids.get(entry.index) or entry.resource_id
        if entry.full_url and entry.full_url.startswith("urn:") and target:
            out[entry.full_url] = f"{entry.resource_type}/{target}"
    return out


def _apply_writes(
    conn: Connection, entries: list[_Entry], new_ids: Mapping[int, str], ctx: BundleContext
) -> None:
    changes: list[RecordWrite] = []
    changed_entries: list[_Entry] = []
    for entry in entries:
        try:
            change = _change(conn, entry, ctx.author, new_ids.get(entry.index))
        except FhirsyncError as exc:
            raise _in_entry(exc, entry) from None
        if change is None:
            entry.response = _response(HTTPStatus.NO_CONTENT)
            continue
        changes.append(change)
        changed_entries.append(entry)
    try:
        results = store.write_many(conn, changes)
    except FhirsyncError as exc:
        raise _in_entry(exc, _entry_of(exc, changes, changed_entries)) from None
    for entry, result in zip(changed_entries, results, strict=True):
        _respond_to_write(entry, result)


def _entry_of(
    exc: FhirsyncError, changes: list[RecordWrite], entries: list[_Entry]
) -> _Entry | None:
    uuid = getattr(exc, "uuid", None)
    message = exc.message
    for change, entry in zip(changes, entries, strict=True):
        if change.uuid == uuid or change.uuid in message:
            return entry
    return None


def _in_entry(exc: FhirsyncError, entry: _Entry | None) -> FhirsyncError:
    """``exc`` with the entry it came from named in its message and element."""
    if entry is None:
        return exc
    exc.message = f"{entry.where}: {exc.message}"
    if isinstance(exc, RecordError):
        element = exc.element
        if element and element.startswith(entry.resource_type):
            element = f"{entry.where}.resource{element[len(entry.resource_type) :]}"
        elif element == "resourceType":
            element = f"{entry.where}.resource.resourceType"
        exc.element = element or entry.where
    return exc


# --- shared ---------------------------------------------------------------------------------------


def _prepare(entry: _Entry, refs: Mapping[str, str] | None = None) -> Mapping[str, Any]:
    """The entry's resource, references rewritten, validated; errors name the entry."""
    assert entry.resource is not None
    resource = _rewrite_references(entry.resource, refs) if refs else entry.resource
    try:
        return fhir.prepare(entry.resource_type, resource)
    except FhirsyncError as exc:
        raise _in_entry(exc, entry) from None


def _change(
    conn: Connection, entry: _Entry, author: Author, new_id: str | None
) -> RecordWrite | None:
    if entry.method == "POST":
        assert entry.resource is not None
        return fhir.create_write(entry.resource_type, entry.resource, author, new_id)
    assert entry.resource_id is not None
    if entry.method == "PUT":
        assert entry.resource is not None
        return fhir.update_write(
            conn,
            entry.resource_type,
            entry.resource_id,
            entry.resource,
            author,
            expected_version=entry.if_match,
        )
    return fhir.delete_write(conn, entry.resource_type, entry.resource_id, author, entry.if_match)


def _respond_to_write(entry: _Entry, result: store.WriteResult) -> None:
    done = fhir.outcome(result)
    status = HTTPStatus.CREATED if done.created else HTTPStatus.OK
    if entry.method == "DELETE":
        status = HTTPStatus.NO_CONTENT
    entry.response = _response(status, entry.resource_type, done.record)


def _get(conn: Connection, entry: _Entry, ctx: BundleContext) -> None:
    try:
        if entry.query is not None:
            query = fhir.parse_search(entry.query, ctx.max_count)
            page = fhir.search(conn, entry.resource_type, query)
            body = fhir.searchset(ctx.base_url, entry.resource_type, page, entry.query)
            entry.response = {"resource": orjson.Fragment(body), "response": {"status": "200 OK"}}
            return
        assert entry.resource_id is not None
        record = fhir.read(conn, entry.resource_type, entry.resource_id)
    except FhirsyncError as exc:
        raise _in_entry(exc, entry) from None
    entry.response = {
        "resource": orjson.Fragment(record.body),
        **_response(HTTPStatus.OK, entry.resource_type, record),
    }


def _response(
    status: HTTPStatus, resource_type: str | None = None, record: Record | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"status": _status_line(status)}
    if record is not None and resource_type is not None:
        out["location"] = fhir.location(resource_type, record)
        out["etag"] = fhir.etag(record)
        out["lastModified"] = _instant(record.last_updated)
    return {"response": out}


@functools.lru_cache(maxsize=64)
def _instant(moment: datetime) -> str:
    """``store.fhir_instant``, once per moment: a transaction writes all its records at one."""
    return store.fhir_instant(moment)


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def _rewrite_references(value: Any, refs: Mapping[str, str]) -> Any:
    """A copy of ``value`` with every ``reference`` naming a key of ``refs`` replaced."""
    if not refs:
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in refs:
                out[key] = refs[item]
            else:
                out[key] = _rewrite_references(item, refs)
        return out
    if isinstance(value, list):
        return [_rewrite_references(item, refs) for item in value]
    return value
