"""The only place where errors become HTTP responses, with one shape per surface.

- ``/ws/fhir2/...``: a FHIR ``OperationOutcome`` (``application/fhir+json``)
- ``/sync2/...``: an HTML error page
- everything else (REST v1, Sync 2.0 endpoints, feeds, ops): OpenMRS-style JSON
  ``{"error": {"message": ..., "code": ..., "detail": ...}}``

A database that cannot be reached (SQLAlchemy's ``OperationalError``) is 503 on every surface.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from fhirsync.errors import (
    AuthError,
    ConfigurationError,
    ConflictError,
    DependencyMissing,
    FeedNotFound,
    FhirsyncError,
    Forbidden,
    InvalidResource,
    MalformedFeed,
    PayloadTooLarge,
    RecordGone,
    RecordNotFound,
    RemoteRejected,
    RequestError,
    TransientError,
    Unauthenticated,
    UnknownResourceType,
    VersionMismatch,
)

log = logging.getLogger(__name__)

NO_FRAMING = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
"""Headers of every admin page and its error pages: no other page may frame them and have an
administrator click their buttons unseen (the SameSite session cookie does not stop another web
app on the same host, e.g. OpenMRS beside a fhirsync agent)."""

# Most specific first: the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[FhirsyncError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (AuthError, 401),
    (VersionMismatch, 412),
    (ConflictError, 409),
    (UnknownResourceType, 404),
    (PayloadTooLarge, 413),
    (MalformedFeed, 400),
    (FeedNotFound, 404),
    (RequestError, 400),
    (InvalidResource, 400),
    (RecordNotFound, 404),
    (RecordGone, 410),
    (DependencyMissing, 400),
    (RemoteRejected, 400),
    (ConfigurationError, 400),
    (TransientError, 503),
)

_FHIR_ISSUE_CODE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    503: "transient",
}


def status_for(error: FhirsyncError) -> int:
    """The HTTP status of a fhirsync error."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


def _element(error: FhirsyncError) -> str | None:
    return getattr(error, "element", None) or getattr(error, "field", None)


def render(
    path: str, status: int, message: str, *, element: str | None = None, detail: str | None = None
) -> Response:
    """An error response in the shape of the surface that ``path`` belongs to."""
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="fhirsync"'
    if path.startswith("/ws/fhir2"):
        issue: dict[str, Any] = {
            "severity": "error",
            "code": _FHIR_ISSUE_CODE.get(status, "exception"),
            "diagnostics": message,
        }
        if element:
            issue["expression"] = [element]
        body = {"resourceType": "OperationOutcome", "issue": [issue]}
        return Response(orjson.dumps(body), status, headers, media_type="application/fhir+json")
    if path.startswith("/sync2"):
        page = (
            "<!doctype html><html><head><title>fhirsync: error</title></head><body>"
            f'<h1>Error {status}</h1><p class="error">{html.escape(message)}</p>'
            + (f"<p>Field: <code>{html.escape(element)}</code></p>" if element else "")
            + '<p><a href="/sync2/">Back to the dashboard</a></p></body></html>'
        )
        headers.update(NO_FRAMING)
        return Response(page, status, headers, media_type="text/html; charset=utf-8")
    err: dict[str, Any] = {"message": message, "code": status}
    if element:
        err["field"] = element
    if detail:
        err["detail"] = detail
    return Response(orjson.dumps({"error": err}), status, headers, media_type="application/json")


async def _fhirsync_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirsyncError)
    status = status_for(exc)
    if status >= 500:
        log.warning("request failed path=%s error=%s", request.url.path, type(exc).__name__)
    return render(request.url.path, status, exc.message, element=_element(exc), detail=exc.detail)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return render(request.url.path, 400, f"{where}: {first.get('msg')}", element=where)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return render(request.url.path, exc.status_code, str(exc.detail))


DATABASE_UNAVAILABLE = (
    "This node's database is unavailable just now (its server is down or restarting, or another "
    "program holds it locked). Nothing was changed; try again in a moment."
)
DATABASE_RETRY_AFTER_SECONDS = 10


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    # The store lets SQLAlchemy's OperationalError through: a database server that is down, a
    # lock held past the busy timeout, a serialisation failure. All mean "try again later", so
    # they are answered 503 (a child's sync retries it) instead of "Internal server error".
    # Only the class is logged: the error's text can quote a statement.
    assert isinstance(exc, OperationalError)
    log.warning("database unavailable path=%s error=%s", request.url.path, type(exc.orig).__name__)
    response = render(request.url.path, 503, DATABASE_UNAVAILABLE)
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error path=%s", request.url.path)
    return render(request.url.path, 500, "Internal server error")


def install(app: FastAPI) -> None:
    """Register every error handler on ``app``."""
    app.add_exception_handler(FhirsyncError, _fhirsync_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
