"""``GET /ws/rest/sync2/feedstate``: how far this node's feeds go, and how far behind a reader is.

A fhirsync child asks it for its lag (dashboard, ``fhirsync status``, ``/metrics``) in one cheap
request instead of reading each category's ``recent`` page. ``position=CATEGORY:ENTRY_ID``
(repeatable) names the reader's marker; the answer gives, per category, the latest sequence number
and how many events follow that entry (``behind``; null when the entry is unknown here).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import JSONResponse

from fhirsync import categories
from fhirsync.server.deps import CurrentUser, NodeDep
from fhirsync.store import backlog, events

router = APIRouter(tags=["sync2"])
MAX_POSITIONS = 200


@router.get("/ws/rest/sync2/feedstate")
def feedstate(
    node: NodeDep,
    _user: CurrentUser,
    position: Annotated[list[str] | None, Query(max_length=MAX_POSITIONS)] = None,
) -> JSONResponse:
    """Latest seq of every category with events, and ``behind`` for each named position."""
    wanted: dict[str, str] = {}
    for raw in position or []:
        name, _, entry = raw.partition(":")
        category = categories.find(name)
        if category is not None:
            wanted[category.name] = entry
    with node.db.read() as conn:
        latest = events.latest_seqs(conn)
        found = backlog.seqs_of_entries(conn, wanted.values())
    body: dict[str, Any] = {}
    for name in sorted(set(latest) | set(wanted)):
        top = latest.get(name, 0)
        asked = wanted.get(name)
        if not asked:
            behind: int | None = top
        else:
            place = found.get(asked)
            behind = top - place[1] if place is not None and place[0] == name else None
        body[name] = {"latest": top, "behind": behind}
    return JSONResponse({"pageSize": node.config.settings.feed_page_size, "categories": body})
