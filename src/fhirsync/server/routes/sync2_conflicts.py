"""``POST /ws/rest/sync2/conflict/resolve?conflictUuid=…`` (spec §6.5), for Java tools.

The body is the merged record (a JSON object). It is written here, the conflict is closed and
audited with the resolving user, and a push sends it to the parent as a new version. Answers 202
``{"url": ...}`` (the audit page of the record), 400 when the body is not a JSON object, 404 when
no open conflict has that uuid (Sync 2.0 answered 500 for every failure).
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhirsync.errors import InvalidResource
from fhirsync.server.deps import AdminUser, NodeDep
from fhirsync.sync.push_run import run_push
from fhirsync.sync.reconcile import reconciler_for
from fhirsync.sync.resolve import resolve

router = APIRouter(prefix="/ws/rest/sync2/conflict", tags=["sync2"])


@router.post("/resolve")
async def resolve_conflict(
    request: Request,
    node: NodeDep,
    user: AdminUser,
    conflict_uuid: Annotated[str, Query(alias="conflictUuid")],
) -> Response:
    """Resolve one conflict with the posted record and push it to the parent."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidResource("the body must be the merged record as JSON") from exc
    if not isinstance(body, dict):
        raise InvalidResource("the body must be a JSON object")
    # In a worker thread: it waits for the database (a push or pull may be committing), and
    # on the event loop that wait would hold up every other request of the node.
    done = await run_in_threadpool(
        resolve,
        node.db,
        reconciler_for(node.config),
        conflict_uuid,
        resolved_by=user.name,
        body=body,
    )
    if node.config.parent_url:
        # The push runs in a worker thread too: it talks to the parent over HTTP.
        await run_in_threadpool(run_push, node.config, node.db)
    url = f"/sync2/audit?record={done.record_uuid}"
    return Response(orjson.dumps({"url": url}), 202, media_type="application/json")
