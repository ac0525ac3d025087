"""``/ws/atomfeed/{category}/recent`` and ``/ws/atomfeed/{category}/{n}`` (authenticated)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from fhirsync.errors import RecordNotFound
from fhirsync.feed.pages import FeedPageData, load_page
from fhirsync.feed.render import PageLinks, render_page
from fhirsync.server.deps import CurrentUser, NodeDep

router = APIRouter()
ATOM_MEDIA_TYPE = "application/atom+xml"
_ARCHIVE_CACHE = "public, max-age=31536000, immutable"


def _self_url(request: Request) -> str:
    """The URL as the client asked for it (behind a proxy: X-Forwarded-Proto/Host)."""
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    host = (
        request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
    )
    return f"{proto}://{host}{request.url.path}"


def _respond(request: Request, data: FeedPageData) -> Response:
    headers = {
        "ETag": data.etag,
        "Cache-Control": _ARCHIVE_CACHE if data.archived else "no-cache",
    }
    if data.etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    self_url = _self_url(request)
    links = PageLinks(self_url, self_url.rsplit("/", 1)[0], data.page, data.latest_page)
    return Response(render_page(data.events, links), headers=headers, media_type=ATOM_MEDIA_TYPE)


@router.get("/ws/atomfeed/{category}/recent")
def recent(category: str, request: Request, node: NodeDep, _user: CurrentUser) -> Response:
    """The latest page of a category's feed (the only one that still grows)."""
    data = load_page(node.db, category, None, node.config.settings.feed_page_size)
    return _respond(request, data)


@router.get("/ws/atomfeed/{category}/{page}")
def numbered(
    category: str, page: str, request: Request, node: NodeDep, _user: CurrentUser
) -> Response:
    """Page ``page`` (1-based) of a category's feed."""
    if not page.isdigit():
        raise RecordNotFound(f"feed page {page!r} is not a page number")
    data = load_page(node.db, category, int(page), node.config.settings.feed_page_size)
    return _respond(request, data)
