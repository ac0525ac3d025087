"""The FHIR R4 surface at ``/ws/fhir2/R4``: parse the request, call service.fhir, render.

Errors are raised as fhirsync errors; ``error_responses`` turns them into OperationOutcomes.
Handlers that read a body are async (to await it) and run the database work in the thread pool.
"""

from __future__ import annotations

from email.utils import format_datetime

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhirsync.categories import FHIR_BASE, ORIGIN_HEADER
from fhirsync.records import Record
from fhirsync.server.deps import CurrentUser, NodeContext, NodeDep, WriterUser
from fhirsync.server.error_responses import status_for
from fhirsync.service import bundles, fhir
from fhirsync.service.authors import Author, author_for
from fhirsync.store.users import User
from fhirsync.sync.reconcile import recheck_local, reconciler_for

router = APIRouter(prefix=FHIR_BASE, tags=["fhir"])
INACTIVE_HEADER = "x-fhirsync-inactive"
"""``include``: a read may serve a voided/retired record (for a child pulling a void)."""
STATE_HEADER = "X-Fhirsync-State"
"""Names the state of a record served that way (``voided``, ``retired``)."""


def _fhir_response(
    body: bytes, status: int = 200, record: Record | None = None, resource_type: str = ""
) -> Response:
    headers: dict[str, str] = {}
    if record is not None:
        headers["ETag"] = fhir.etag(record)
        headers["Last-Modified"] = format_datetime(record.last_updated, usegmt=True)
        if status == 201:
            headers["Location"] = f"{FHIR_BASE}/{fhir.location(resource_type, record)}"
    return Response(body, status, headers, media_type=fhir.FHIR_JSON)


def _author(node: NodeContext, user: User, request: Request) -> Author:
    if user.role == "viewer":  # a Bundle of reads; bundles refuse a viewer's write entries
        return Author(node.config.instance_id)
    return author_for(user, node.config.instance_id, request.headers.get(ORIGIN_HEADER))


@router.get("/metadata")
def metadata(node: NodeDep, _user: CurrentUser) -> Response:
    """The CapabilityStatement."""
    statement = fhir.capability_statement(node.config.base_url)
    return _fhir_response(orjson.dumps(statement))


async def _bundle(request: Request, node: NodeContext, user: User) -> Response:
    raw = await request.body()
    ctx = bundles.BundleContext(
        db=node.db,
        author=_author(node, user, request),
        can_write=user.role in ("admin", "child"),
        base_url=node.config.base_url,
        max_count=node.config.settings.search_max_count,
        status_for=status_for,
    )
    body = await run_in_threadpool(_process_bundle, raw, ctx, node)
    return _fhir_response(body)


def _process_bundle(raw: bytes, ctx: bundles.BundleContext, node: NodeContext) -> bytes:
    """The Bundle's answer, and its records' open conflicts decided again (one worker-thread
    hop for both: a pushed batch waits for its answer)."""
    body = bundles.process(raw, ctx)
    if ctx.can_write:
        # Any record of the bundle may hold an open conflict with the parent: decide them again.
        recheck_local(node.db, reconciler_for(node.config))
    return body


@router.post("")
async def bundle(request: Request, node: NodeDep, user: CurrentUser) -> Response:
    """A batch or transaction Bundle posted to the base."""
    return await _bundle(request, node, user)


@router.post("/", include_in_schema=False)
async def bundle_slash(request: Request, node: NodeDep, user: CurrentUser) -> Response:
    """The same, with a trailing slash."""
    return await _bundle(request, node, user)


@router.get("/{resource_type}")
def search(request: Request, resource_type: str, node: NodeDep, _user: CurrentUser) -> Response:
    """Type search by ``_id``, ``_lastUpdated``, ``_count`` (``_cursor`` pages)."""
    fhir.categories_of(resource_type)
    params = list(request.query_params.multi_items())
    query = fhir.parse_search(params, node.config.settings.search_max_count)
    with node.db.read() as conn:
        page = fhir.search(conn, resource_type, query)
    return _fhir_response(fhir.searchset(node.config.base_url, resource_type, page, params))


@router.post("/{resource_type}")
async def create(request: Request, resource_type: str, node: NodeDep, user: WriterUser) -> Response:
    """Create with a new id: 201 with Location and ETag."""
    fhir.categories_of(resource_type)
    resource = fhir.parse_json_object(await request.body(), resource_type)
    author = _author(node, user, request)

    def work() -> fhir.WriteOutcome:
        with node.db.write() as conn:
            return fhir.create(conn, resource_type, resource, author)

    done = await run_in_threadpool(work)
    return _fhir_response(done.record.body, 201, done.record, resource_type)


@router.get("/{resource_type}/{resource_id}")
def read(
    request: Request, resource_type: str, resource_id: str, node: NodeDep, user: CurrentUser
) -> Response:
    """The stored body with ETag; 404 missing, 410 deleted.

    A child or an admin that sends ``X-Fhirsync-Inactive: include`` gets a voided or retired
    record's last body too, marked by ``X-Fhirsync-State``: a pulled void then brings the body
    the parent held when it voided (an edit made just before the void is not missed). Without
    the header (FHIR clients, Java nodes) the answer stays 410.
    """
    with node.db.read() as conn:
        if _wants_inactive(request, user):
            record = fhir.find(conn, resource_type, resource_id)
            if record is not None and record.state in ("voided", "retired"):
                response = _fhir_response(record.body, 200, record, resource_type)
                response.headers[STATE_HEADER] = record.state
                return response
        record = fhir.read(conn, resource_type, resource_id)
    return _fhir_response(record.body, 200, record, resource_type)


def _wants_inactive(request: Request, user: User) -> bool:
    asked = request.headers.get(INACTIVE_HEADER, "").strip().lower() == "include"
    return asked and user.role in ("admin", "child")


@router.put("/{resource_type}/{resource_id}")
async def update(
    request: Request, resource_type: str, resource_id: str, node: NodeDep, user: WriterUser
) -> Response:
    """Upsert keeping the client's id: 201 created, 200 updated, 412 on a stale If-Match."""
    fhir.categories_of(resource_type)
    expected = fhir.parse_if_match(request.headers.get("if-match"))
    resource = fhir.parse_json_object(await request.body(), resource_type)
    author = _author(node, user, request)

    def work() -> fhir.WriteOutcome:
        done = fhir.in_write(
            node.db,
            lambda conn: fhir.update(
                conn, resource_type, resource_id, resource, author, expected_version=expected
            ),
        )
        _recheck(node, done.record)
        return done

    done = await run_in_threadpool(work)
    return _fhir_response(
        done.record.body, 201 if done.created else 200, done.record, resource_type
    )


@router.delete("/{resource_type}/{resource_id}")
def delete(
    request: Request, resource_type: str, resource_id: str, node: NodeDep, user: WriterUser
) -> Response:
    """Void or retire (history kept): 204; a later read answers 410."""
    expected = fhir.parse_if_match(request.headers.get("if-match"))
    author = _author(node, user, request)
    with node.db.write() as conn:
        record = fhir.delete(conn, resource_type, resource_id, author, expected)
    if record is not None:
        _recheck(node, record)
    return Response(status_code=204)


def _recheck(node: NodeContext, record: Record) -> None:
    """A local write may settle (or change) an open conflict of the record with the parent."""
    recheck_local(node.db, reconciler_for(node.config), [(record.category, record.uuid)])
