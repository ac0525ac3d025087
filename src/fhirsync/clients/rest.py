"""The OpenMRS REST v1 client: one GET per record (run concurrently), writes per record.

fetch: ``GET {base}{link}`` per record, the link being the entry's ``rest`` link or
``/ws/rest/v1/{resource}/{uuid}?v=full``; the requests run on a small thread pool over the shared
keep-alive client. 404/410 → absent; a body that is not a JSON object → failed (InvalidResource).
The body is returned as served (REST representations carry ``voided``/``retired`` themselves).

send: CREATED/UPDATED → ``POST /ws/rest/v1/{resource}`` with the uuid in the body (a fhirsync
node's create is idempotent: an existing uuid is updated); RETIRED/VOIDED → ``DELETE /{uuid}``;
DELETED → ``DELETE /{uuid}?purge=true``; UNRETIRED/UNVOIDED → ``POST /{uuid}`` with
``{"retired": false}`` / ``{"voided": false}``. A change with a base version sends it as
``If-Match`` (:func:`if_match`); a fhirsync remote answers 412 when it is stale, reported as
``RemoteRejected(status=412)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from threading import Lock
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from fhirsync.categories import ORIGIN_HEADER, REST_BASE, Category
from fhirsync.clients.base import FetchResult, OutgoingChange, RecordRef, SendResult
from fhirsync.clients.http import error_for_response, request
from fhirsync.errors import (
    FhirsyncError,
    InvalidResource,
    RecordError,
    RecordGone,
    RecordNotFound,
    RemoteRejected,
    UnknownResourceType,
)

DEFAULT_CONCURRENCY = 8
_DELETES = {"VOIDED": None, "RETIRED": None, "DELETED": {"purge": "true"}}
_UNDOES = {"UNVOIDED": "voided", "UNRETIRED": "retired"}


class RestClient:
    """A :class:`~fhirsync.clients.base.SourceClient` over a node's OpenMRS REST v1 API."""

    name = "rest"

    def __init__(
        self,
        http: httpx.Client,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        follow_any_link: bool = False,
        owns_http: bool = False,
    ) -> None:
        """``follow_any_link``: fetch any category whose entries carry a ``rest`` link (a Java
        OpenMRS parent serves every category over REST)."""
        self._http = http
        self._concurrency = max(1, concurrency)
        self._follow_any_link = follow_any_link
        self._owns_http = owns_http
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = Lock()

    def supports(self, category: Category) -> bool:
        """Categories with a REST resource (any category when following Java links)."""
        return category.rest_resource is not None or self._follow_any_link

    def close(self) -> None:
        """Stop the worker threads; close the HTTP client if this client made it."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._owns_http:
            self._http.close()

    # --- fetch ----------------------------------------------------------------------------------

    def fetch(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        """One GET per record, concurrently; 404/410 → absent, a non-object body → failed."""
        unique = list({ref.uuid: ref for ref in refs}.values())
        result = FetchResult()
        urls: list[tuple[str, str]] = []
        for ref in unique:
            url = self._read_url(category, ref)
            if url is None:
                result.failed[ref.uuid] = RemoteRejected(
                    "the entry has no rest link to fetch",
                    status=400,
                    category=category.name,
                    uuid=ref.uuid,
                )
            else:
                urls.append((ref.uuid, url))
        if len(urls) <= 1:
            outcomes = [self._fetch_one(category, uuid, url) for uuid, url in urls]
        else:
            pool = self._executor()
            futures: list[Future[tuple[str, dict[str, Any] | RecordError | None]]] = [
                pool.submit(self._fetch_one, category, uuid, url) for uuid, url in urls
            ]
            outcomes = _gather(futures)
        for uuid, outcome in outcomes:
            if outcome is None:
                result.absent.add(uuid)
            elif isinstance(outcome, RecordError):
                result.failed[uuid] = outcome
            else:
                result.found[uuid] = outcome
        return result

    def fetch_last(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        """The remote's last body of records it voided or retired (``sync.apply.LastBodySource``):
        a REST read serves them with their ``voided``/``retired`` flag; purged ones are absent."""
        return self.fetch(category, refs)

    def _fetch_one(
        self, category: Category, uuid: str, url: str
    ) -> tuple[str, dict[str, Any] | RecordError | None]:
        response = request(self._http, "GET", url)
        error = error_for_response(response, category=category.name, uuid=uuid)
        if isinstance(error, RecordNotFound | RecordGone):
            return uuid, None
        if isinstance(error, RecordError):
            return uuid, error
        if error is not None:
            raise error  # transient or authentication: the caller stops the run
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return uuid, InvalidResource(
                "the REST representation is not a JSON object", category=category.name, uuid=uuid
            )
        return uuid, body

    def _read_url(self, category: Category, ref: RecordRef) -> str | None:
        link = ref.links.get("rest")
        if link:
            # Only the path and query: the publisher's idea of its host is not ours (§13.5).
            parts = urlsplit(link)
            return f"{parts.path}?{parts.query}" if parts.query else parts.path
        if category.rest_resource is None:
            return None
        return f"{self._collection(category)}/{ref.uuid}?v=full"

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="rest-fetch")
            return self._pool

    # --- send -----------------------------------------------------------------------------------

    def send(
        self,
        category: Category,
        changes: Sequence[OutgoingChange],
        *,
        origin: str | None = None,
    ) -> SendResult:
        """Write each change in order; a 4xx fails that record, 5xx/401/403 raise."""
        base = self._collection(category)
        headers = {"Content-Type": "application/json"}
        if origin:
            headers[ORIGIN_HEADER] = origin
        result = SendResult()
        for change in changes:
            error = self._send_one(category, base, change, headers)
            if error is None:
                result.sent.add(change.uuid)
            else:
                result.failed[change.uuid] = error
        return result

    def _send_one(
        self, category: Category, base: str, change: OutgoingChange, headers: dict[str, str]
    ) -> RecordError | None:
        if change.base_version is not None:
            # A write over a version the remote has moved past is refused with 412 (a conflict
            # for the engine), not applied over the remote's newer change.
            headers = {**headers, "If-Match": if_match(change.base_version)}
        if change.action in _DELETES:
            response = request(
                self._http,
                "DELETE",
                f"{base}/{change.uuid}",
                params=_DELETES[change.action],
                headers=headers,
            )
            gone_is_done = True
        elif change.action in _UNDOES:
            body: dict[str, Any] = {_UNDOES[change.action]: False}
            url = f"{base}/{change.uuid}"
            response = request(self._http, "POST", url, content=orjson.dumps(body), headers=headers)
            gone_is_done = False
        else:
            if change.body is None:
                return InvalidResource(
                    f"{change.action} has no body to send", category=category.name, uuid=change.uuid
                )
            body = {**change.body, "uuid": change.uuid}
            response = request(
                self._http, "POST", base, content=orjson.dumps(body), headers=headers
            )
            gone_is_done = False
        error = error_for_response(response, category=category.name, uuid=change.uuid)
        if error is None or (gone_is_done and isinstance(error, RecordNotFound | RecordGone)):
            return None
        if isinstance(error, RecordError):
            return error
        raise error

    def _collection(self, category: Category) -> str:
        if category.rest_resource is None:
            raise UnknownResourceType(f"category {category.name!r} has no REST resource")
        return f"{REST_BASE}/{category.rest_resource}"


def if_match(base_version: str) -> str:
    """The ``If-Match`` header of a base: ``W/"3"`` for a version number, else the quoted
    entity tag (``service.rest_versions.entity_tag``: content hash and state)."""
    return f'W/"{base_version}"' if base_version.isdigit() else f'"{base_version}"'


def _gather(
    futures: list[Future[tuple[str, dict[str, Any] | RecordError | None]]],
) -> list[tuple[str, dict[str, Any] | RecordError | None]]:
    """Every future's result. On the first fhirsync error the requests not yet started are
    cancelled (an unreachable parent must not cost one timeout per record) and it is raised."""
    out: list[tuple[str, dict[str, Any] | RecordError | None]] = []
    for index, future in enumerate(futures):
        try:
            out.append(future.result())
        except FhirsyncError:
            for rest in futures[index + 1 :]:
                rest.cancel()
            raise
    return out
