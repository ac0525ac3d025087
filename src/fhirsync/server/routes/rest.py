"""OpenMRS REST v1 at ``/ws/rest/v1/{resource}``: the metadata categories with no FHIR form.

Thin handlers: parse the request, call one function of ``fhirsync.service.rest``, render JSON.
Errors are fhirsync errors, rendered as ``{"error": {...}}`` by ``server/error_responses.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response

from fhirsync.categories import REST_BASE
from fhirsync.server.deps import CurrentUser, NodeContext, NodeDep, WriterUser
from fhirsync.service import rest as service
from fhirsync.sync.reconcile import recheck_local, reconciler_for

router = APIRouter(prefix=REST_BASE)

OriginHeader = Annotated[str | None, Header(alias=service.ORIGIN_HEADER)]
IfMatch = Annotated[str | None, Header(alias="If-Match")]
View = Annotated[str | None, Query(alias="v")]


async def _raw_body(request: Request) -> bytes:
    """The request body (read here so the handlers can stay synchronous)."""
    return await request.body()


RawBody = Annotated[bytes, Depends(_raw_body)]


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _flag(value: str | None) -> bool:
    """A query flag: present with no value, or any value but false/0/no, means yes."""
    return value is not None and value.strip().lower() not in ("false", "0", "no")


@router.get("/{resource}")
def list_records(
    resource: str,
    *,
    node: NodeDep,
    user: CurrentUser,
    v: View = None,
    limit: Annotated[int, Query()] = service.DEFAULT_LIMIT,
    start_index: Annotated[int, Query(alias="startIndex")] = 0,
    include_all: Annotated[str | None, Query(alias="includeAll")] = None,
) -> Response:
    """``{"results": [...]}``, ref representations unless ``v`` says otherwise."""
    category = service.category_for(resource)
    page = service.list_page(
        node.db,
        category,
        view=service.parse_view(v, "ref"),
        base_url=node.config.base_url,
        start_index=start_index,
        limit=limit,
        include_all=_flag(include_all),
    )
    return _json(page)


@router.get("/{resource}/{uuid}")
def get_record(
    resource: str, uuid: str, node: NodeDep, user: CurrentUser, v: View = None
) -> Response:
    """One record (retired/voided ones too); 404 when missing or purged."""
    category = service.category_for(resource)
    view = service.parse_view(v, "default")
    return _json(service.read(node.db, category, uuid, view, node.config.base_url))


@router.post("/{resource}")
def create_record(
    resource: str,
    *,
    node: NodeDep,
    user: WriterUser,
    raw: RawBody,
    origin: OriginHeader = None,
    if_match: IfMatch = None,
) -> Response:
    """Create (201), keeping a given uuid; an existing uuid is updated instead (200); 412 when
    ``If-Match`` names a version the record has moved past."""
    category = service.category_for(resource)
    author = service.author_for(user, node.config.instance_id, origin)
    payload = service.parse_body(raw)
    rep, created = service.create(
        node.db,
        category,
        payload,
        author,
        node.config.base_url,
        if_match=service.parse_if_match(if_match),
    )
    _recheck(node, category.name, str(rep["uuid"]))
    return _json(rep, 201 if created else 200)


@router.post("/{resource}/{uuid}")
def update_record(
    resource: str,
    uuid: str,
    *,
    node: NodeDep,
    user: WriterUser,
    raw: RawBody,
    origin: OriginHeader = None,
    if_match: IfMatch = None,
) -> Response:
    """Merge the given fields into the record; 404 when it is missing or purged, 412 on a stale
    ``If-Match``."""
    category = service.category_for(resource)
    author = service.author_for(user, node.config.instance_id, origin)
    payload = service.parse_body(raw)
    rep = service.update(
        node.db,
        category,
        uuid,
        payload,
        author=author,
        base_url=node.config.base_url,
        if_match=service.parse_if_match(if_match),
    )
    _recheck(node, category.name, uuid)
    return _json(rep)


@router.delete("/{resource}/{uuid}")
def delete_record(
    resource: str,
    uuid: str,
    *,
    node: NodeDep,
    user: WriterUser,
    origin: OriginHeader = None,
    purge: Annotated[str | None, Query()] = None,
    reason: Annotated[str | None, Query()] = None,
    if_match: IfMatch = None,
) -> Response:
    """Retire or void (204); ``?purge`` deletes, so a later GET answers 404; 412 on a stale
    ``If-Match``."""
    category = service.category_for(resource)
    author = service.author_for(user, node.config.instance_id, origin)
    # ``reason`` is accepted as OpenMRS clients send it, but not stored (see service.delete).
    del reason
    service.delete(
        node.db,
        category,
        uuid,
        author,
        purge=_flag(purge),
        if_match=service.parse_if_match(if_match),
    )
    _recheck(node, category.name, uuid)
    return Response(status_code=204)


def _recheck(node: NodeContext, category: str, uuid: str) -> None:
    """A local write may settle (or change) an open conflict of the record with the parent."""
    recheck_local(node.db, reconciler_for(node.config), [(category, uuid)])
