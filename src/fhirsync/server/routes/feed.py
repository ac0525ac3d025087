"""``/ws/atomfeed/{category}/recent`` and ``/ws/atomfeed/{category}/{n}`` (authenticated).

Archived pages (before the latest) never change: they get a strong ETag from their content and a
year-long, immutable cache lifetime. ``recent`` and the latest numbered page get an ETag that
changes with every new event and must be revalidated (``no-cache``). Both answer a matching
``If-None-Match`` with 304.
"""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from starlette.responses import Response

from fhirsync.errors import RecordNotFound
from fhirsync.feed.pages import PageRef, load_events, locate_page
from fhirsync.feed.render import PageLinks, render_page
from fhirsync.server.deps import CurrentUser, NodeDep
from fhirsync.settings import NodeSettings

router = APIRouter()
ATOM_MEDIA_TYPE = "application/atom+xml"
_ARCHIVE_CACHE = "public, max-age=31536000, immutable"
_SCHEMES = ("http", "https")


def _first(value: str | None) -> str | None:
    # Proxies append: "X-Forwarded-Host: outer, inner"; the first is what the client used.
    if not value:
        return None
    return value.split(",", 1)[0].strip() or None


def _self_url(request: Request, settings: NodeSettings) -> str:
    """The URL as the client asked for it (behind a trusted proxy: X-Forwarded-Proto/Host).

    Archived pages are cached publicly, and X-Forwarded-Host is not part of a shared cache's key,
    so the forwarded headers are honoured only from ``trusted_proxies``: from anyone else they
    could plant links to another host in the page every later reader is served.
    """
    headers = request.headers
    proto = host = None
    if settings.trusts_proxy(request.client.host if request.client else None):
        proto = _first(headers.get("x-forwarded-proto"))
        host = _first(headers.get("x-forwarded-host"))
    if proto not in _SCHEMES:
        proto = request.url.scheme
    host = host or headers.get("host") or request.url.netloc
    return f"{proto}://{host}{request.url.path}"


def _etag(ref: PageRef, self_url: str) -> str:
    # The page's links are built from the URL asked for, so it is part of the representation.
    digest = hashlib.sha256(f"{ref.etag}|{self_url}".encode()).hexdigest()[:32]
    return f'"{digest}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison, as RFC 9110 prescribes for If-None-Match."""
    if not if_none_match:
        return False
    for raw in if_none_match.split(","):
        candidate = raw.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def _respond(request: Request, node: NodeDep, page: int | None, category: str) -> Response:
    ref = locate_page(node.db, category, page, node.config.settings.feed_page_size)
    self_url = _self_url(request, node.config.settings)
    etag = _etag(ref, self_url)
    headers = {"ETag": etag, "Cache-Control": _ARCHIVE_CACHE if ref.archived else "no-cache"}
    if _matches(request.headers.get("if-none-match"), etag):
        # Answered from the page's location alone: its events are never read.
        return Response(status_code=304, headers=headers)
    links = PageLinks(self_url, self_url.rsplit("/", 1)[0], ref.page, ref.latest_page)
    body = render_page(load_events(node.db, ref), links)
    return Response(body, headers=headers, media_type=ATOM_MEDIA_TYPE)


@router.get("/ws/atomfeed/{category}/recent")
def recent(category: str, request: Request, node: NodeDep, _user: CurrentUser) -> Response:
    """The latest page of a category's feed (the only one that still grows)."""
    return _respond(request, node, None, category)


@router.get("/ws/atomfeed/{category}/{page}")
def numbered(
    category: str, page: str, request: Request, node: NodeDep, _user: CurrentUser
) -> Response:
    """Page ``page`` (1-based) of a category's feed."""
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
    if not (page.isascii() and page.isdigit()) or len(page) > 18:
        raise RecordNotFound(f"feed page {page[:40]!r} is not a page number")
    return _respond(request, node, int(page), category)
