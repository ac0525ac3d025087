"""The FHIR R4 client: batch fetch by ``_id`` search, batch send as one ``batch`` Bundle.

fetch: ``GET {base}/ws/fhir2/R4/{Type}?_id=a,b,...&_count=N`` per chunk of N ids (N = batch size),
following ``next`` links. Ids the search does not return are absent: voided/retired/deleted records
are not returned by a search, and the engine decides from the feed action. A returned resource
whose id was not asked for is ignored.

send: one ``batch`` Bundle per chunk POSTed to ``{base}/ws/fhir2/R4``: ``PUT {Type}/{id}`` for
created/updated/unvoided/unretired records (keeping the id, ``ifMatch`` when the base version is
known) and ``DELETE {Type}/{id}`` for voids, retires and deletes (``ifMatch`` too: a void
against an edit the remote made since the base is refused, not applied). Each entry's status
decides sent or failed; a 412 is reported as ``RemoteRejected(status=412)`` so the engine can
tell a version conflict apart by its status.

fetch_last: one read per record with ``X-Fhirsync-Inactive: include``, which a fhirsync node
answers with the body of a voided/retired record (a pulled void then brings the last body).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from fhirsync import categories
from fhirsync.categories import FHIR_BASE, ORIGIN_HEADER, Category
from fhirsync.clients.base import FetchResult, OutgoingChange, RecordRef, SendResult
from fhirsync.clients.http import error_for_status, outcome_message, raise_for_status, request
from fhirsync.errors import (
    InvalidResource,
    RecordError,
    RecordGone,
    RecordNotFound,
    RemoteRejected,
    UnknownResourceType,
)

FHIR_JSON = "application/fhir+json"
INACTIVE_HEADER = "X-Fhirsync-Inactive"
DELETE_ACTIONS = frozenset({"VOIDED", "RETIRED", "DELETED"})
_GONE = (404, 410)
"""A DELETE answered 404/410 found nothing left to remove: the change is done."""


class FhirClient:
    """A :class:`~fhirsync.clients.base.SourceClient` over a node's FHIR R4 API."""

    name = "fhir"

    def __init__(self, http: httpx.Client, *, batch_size: int = 500, owns_http: bool = False):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._http = http
        self._batch_size = batch_size
        self._owns_http = owns_http

    def supports(self, category: Category) -> bool:
        """Categories stored as a FHIR resource type."""
        return category.fhir_type is not None

    def close(self) -> None:
        """Close the HTTP client if this client made it (a shared one is closed by its owner)."""
        if self._owns_http:
            self._http.close()

    # --- fetch ----------------------------------------------------------------------------------

    def fetch(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        """Fetch by ``_id`` search in chunks; missing (or voided) ids are absent."""
        fhir_type = self._type_of(category)
        result = FetchResult()
        wanted: list[str] = []
        for uuid in dict.fromkeys(ref.uuid for ref in refs):
            if categories.is_valid_id(uuid):
                wanted.append(uuid)
            else:
                result.failed[uuid] = InvalidResource(
                    f"{uuid!r} is not a valid FHIR id", category=category.name, uuid=uuid
                )
        for start in range(0, len(wanted), self._batch_size):
            self._fetch_chunk(category, fhir_type, wanted[start : start + self._batch_size], result)
        return result

    def _fetch_chunk(
        self, category: Category, fhir_type: str, ids: list[str], result: FetchResult
    ) -> None:
        asked = set(ids)
        found: dict[str, dict[str, Any]] = {}
        path = f"{FHIR_BASE}/{fhir_type}"
        params: dict[str, str] | None = {"_id": ",".join(ids), "_count": str(len(ids))}
        query: str | None = None
        seen_queries: set[str] = set()
        # A chunk fits on one page; the page bound only stops a server whose links go in circles.
        for _ in range(len(ids) + 1):
            url = f"{path}?{query}" if query is not None else path
            response = request(self._http, "GET", url, params=params)
            error = _status_error(response, category)
            if isinstance(error, RecordError):
                for uuid in ids:
                    result.failed[uuid] = _for_record(error, category, uuid)
                return
            bundle = _json_object(response.content)
            if bundle is None or bundle.get("resourceType") != "Bundle":
                for uuid in ids:
                    result.failed[uuid] = InvalidResource(
                        f"the {fhir_type} search did not answer with a Bundle",
                        category=category.name,
                        uuid=uuid,
                    )
                return
            for resource in _resources(bundle):
                rid = resource.get("id")
                if isinstance(rid, str) and rid in asked:
                    found[rid] = resource
            query = _next_query(bundle)
            if query is None or query in seen_queries:
                break
            seen_queries.add(query)
            params = None
        result.found.update(found)
        result.absent.update(asked - found.keys())

    def fetch_last(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        """The remote's last body of records it voided or retired (``sync.apply.LastBodySource``).

        One read per record with ``X-Fhirsync-Inactive: include``; the remote serves the body of a
        voided/retired record when it is a fhirsync node. 404/410 (a Java node, a purged record) →
        absent: the engine then changes only the state.
        """
        fhir_type = self._type_of(category)
        result = FetchResult()
        for uuid in dict.fromkeys(ref.uuid for ref in refs):
            if not categories.is_valid_id(uuid):
                result.absent.add(uuid)
                continue
            url = f"{FHIR_BASE}/{fhir_type}/{uuid}"
            response = request(self._http, "GET", url, headers={INACTIVE_HEADER: "include"})
            error = _status_error(response, category)
            body = _json_object(response.content) if error is None else None
            if isinstance(error, RecordNotFound | RecordGone) or (error is None and body is None):
                result.absent.add(uuid)
            elif error is not None:
                result.failed[uuid] = _for_record(error, category, uuid)
            elif body is not None:
                result.found[uuid] = body
        return result

    # --- send -----------------------------------------------------------------------------------

    def send(
        self,
        category: Category,
        changes: Sequence[OutgoingChange],
        *,
        origin: str | None = None,
    ) -> SendResult:
        """Write ``changes`` as ``batch`` Bundles; ``origin`` goes out as ``X-Fhirsync-Origin``."""
        fhir_type = self._type_of(category)
        result = SendResult()
        for start in range(0, len(changes), self._batch_size):
            chunk = changes[start : start + self._batch_size]
            self._send_chunk(category, fhir_type, chunk, origin, result)
        return result

    def _send_chunk(
        self,
        category: Category,
        fhir_type: str,
        changes: Sequence[OutgoingChange],
        origin: str | None,
        result: SendResult,
    ) -> None:
        entries: list[dict[str, Any]] = []
        sendable: list[OutgoingChange] = []
        for change in changes:
            entry = _bundle_entry(fhir_type, change)
            if entry is None:
                result.failed[change.uuid] = InvalidResource(
                    f"{change.action} of {fhir_type}/{change.uuid} has no body to send",
                    category=category.name,
                    uuid=change.uuid,
                )
            else:
                entries.append(entry)
                sendable.append(change)
        if not entries:
            return
        headers = {"Content-Type": FHIR_JSON}
        if origin:
            headers[ORIGIN_HEADER] = origin
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
        response = request(
            self._http, "POST", FHIR_BASE, content=orjson.dumps(bundle), headers=headers
        )
        if response.status_code == 413 and len(sendable) > 1:
            # Too big for the remote's body limit: halve the batch until it fits.
            half = len(sendable) // 2
            self._send_chunk(category, fhir_type, sendable[:half], origin, result)
            self._send_chunk(category, fhir_type, sendable[half:], origin, result)
            return
        error = _status_error(response, category)
        if error is not None:
            for change in sendable:
                result.failed[change.uuid] = _for_record(error, category, change.uuid)
            return
        answer = _json_object(response.content) or {}
        answers = answer.get("entry")
        answers = answers if isinstance(answers, list) else []
        for index, change in enumerate(sendable):
            one = answers[index] if index < len(answers) else None
            status, message = _entry_status(one)
            if 200 <= status < 300 or (change.action in DELETE_ACTIONS and status in _GONE):
                result.sent.add(change.uuid)
                continue
            if status == 0:
                message = "the batch response has no answer for this entry"
                status = 502
            entry_error = error_for_status(
                status, message, where="the remote", category=category.name, uuid=change.uuid
            )
            if not isinstance(entry_error, RecordError):
                raise entry_error  # 5xx, 401, 403 for an entry: the whole batch is retried
            result.failed[change.uuid] = entry_error

    def _type_of(self, category: Category) -> str:
        if category.fhir_type is None:
            raise UnknownResourceType(f"category {category.name!r} has no FHIR resource type")
        return category.fhir_type


def _status_error(response: httpx.Response, category: Category) -> RecordError | None:
    """None for 2xx; a RecordError to report per record; raises transient and auth errors."""
    if 200 <= response.status_code < 300:
        return None
    if response.status_code == 413:
        return RemoteRejected(
            "the remote refused the request as too large (413)",
            status=413,
            category=category.name,
        )
    try:
        raise_for_status(response, category=category.name)
    except RecordError as exc:
        return exc
    raise AssertionError("raise_for_status returned for a non-2xx status")  # pragma: no cover


def _for_record(error: RecordError, category: Category, uuid: str) -> RecordError:
    """A copy of a batch-wide record error for one uuid (each failure names its record)."""
    if isinstance(error, RemoteRejected):
        copy: RecordError = RemoteRejected(
            error.message, status=error.status, category=category.name, uuid=uuid
        )
    else:
        copy = type(error)(error.message, category=category.name, uuid=uuid, detail=error.detail)
    copy.__cause__ = error
    return copy


def _bundle_entry(fhir_type: str, change: OutgoingChange) -> dict[str, Any] | None:
    url = f"{fhir_type}/{change.uuid}"
    req: dict[str, str] = {"method": "DELETE", "url": url}
    if change.base_version is not None:
        # A void or a put against a version the remote has moved past is refused with 412 (a
        # conflict for the engine), never applied over the remote's newer edit.
        req["ifMatch"] = f'W/"{change.base_version}"'
    if change.action in DELETE_ACTIONS:
        return {"request": req}
    if change.body is None:
        return None
    body = dict(change.body)
    body["resourceType"] = fhir_type
    body["id"] = change.uuid
    req["method"] = "PUT"
    return {"resource": body, "request": req}


def _entry_status(answer: Any) -> tuple[int, str]:
    """The status code and remote message of one batch-response entry (0 when missing)."""
    if not isinstance(answer, dict):
        return 0, ""
    response = answer.get("response")
    if not isinstance(response, dict):
        return 0, ""
    code = str(response.get("status", "")).split(" ", 1)[0]
    status = int(code) if code.isascii() and code.isdigit() else 0  # "²" is a digit to isdigit
    return status, outcome_message(response.get("outcome"))


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _resources(bundle: dict[str, Any]) -> Iterable[dict[str, Any]]:
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            yield resource


def _next_query(bundle: dict[str, Any]) -> str | None:
    """The query string of the ``next`` link: we keep our own base URL (spec §13.5)."""
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                return urlsplit(url).query
    return None
