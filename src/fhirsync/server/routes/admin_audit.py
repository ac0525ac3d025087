"""Audit log pages: the filtered list, one message's details, Retry and "Retry all failed"."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from fhirsync.errors import FhirsyncError, RecordNotFound, RequestError
from fhirsync.server.audit_view import Filters, plain_error
from fhirsync.server.deps import NodeDep
from fhirsync.server.routes import admin_actions
from fhirsync.server.routes.admin_common import AdminFormSession, PageSession, page, redirect
from fhirsync.store import audit_query
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store.audit_query import AuditMessage

router = APIRouter(prefix="/sync2/audit", include_in_schema=False)

PAGE_SIZE = 20
CONFLICT_NOT_RETRIED = (
    "Retry not done: this message records a conflict, which a retry cannot settle. "
    "Resolve it on the Conflicts page."
)


def _links(message: AuditMessage) -> dict[str, str]:
    try:
        value = json.loads(message.available_resource_urls or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


@router.get("")
def audit_list(
    request: Request,
    node: NodeDep,
    session: PageSession,
    *,
    status: str = "ALL",
    operation: str = "ALL",
    category: str = "",
    origin: str = "",
    since: str = "",
    until: str = "",
    record: str = "",
    page_no: Annotated[int, Query(alias="page", ge=1)] = 1,
    upto: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Response:
    """Audit messages newest first, filtered and paginated.

    The pager's links carry ``upto``, the newest row when the listing began, so that messages
    recorded meanwhile (a sync run) do not shift the later pages; "Show" starts afresh.
    """
    filters = Filters(status, operation, category, origin, since, until, record)
    error = None
    try:
        flt = filters.to_filter()
    except RequestError as exc:
        # Only the times are parsed, so only they are left out; the other filters still hold.
        flt, error = replace(filters, since="", until="").to_filter(), exc.message
    with node.db.read() as conn:
        snapshot = audit_query.last_id(conn) if upto is None else upto
        flt = replace(flt, up_to_id=snapshot)
        listing = audit_query.list_messages(conn, flt, page=page_no, page_size=PAGE_SIZE)
        origins = audit_query.origins(conn)
        categories = audit_query.resource_names(conn)
    if listing.page > listing.page_count:
        # A bookmarked or hand-typed page past the end (the log shrank, or a filter matches
        # fewer rows): show the last page rather than an empty one whose "Newer" link is empty too.
        last = filters.query(page=listing.page_count, upto=snapshot)
        return redirect(request, f"/sync2/audit?{last}")
    return page(
        request,
        "audit_list.html",
        {
            "nav": "audit",
            "listing": listing,
            "filters": filters,
            "origins": origins,
            "categories": categories,
            "filter_error": error,
            "retry_blocked": admin_actions.retry_unavailable_reason(node),
            "own_id": node.config.sync2.general.local_instance_id,
            "snapshot": snapshot,
        },
        session=session,
    )


@router.get("/{uuid}")
def audit_detail(request: Request, node: NodeDep, session: PageSession, uuid: str) -> Response:
    """One message: the fields of spec §9, the error in plain words, Retry or its next message."""
    with node.db.read() as conn:
        message = audit_query.get_message(conn, uuid)
        previous = audit_query.previous_message(conn, uuid)
        conflict = (
            conflict_repo.get(conn, message.merge_conflict_uuid)
            if message is not None and message.merge_conflict_uuid
            else None
        )
    if message is None:
        raise RecordNotFound(f"There is no audit message {uuid}.")
    own = node.config.sync2.general.local_instance_id
    retryable = (
        not message.success
        and not message.merge_conflict_uuid
        and message.next_message_uuid is None
        and message.creator_instance_id == own
        and message.error_class != "Dismissed"
        and (message.operation or "").upper() in ("PULL", "PUSH")
    )
    return page(
        request,
        "audit_detail.html",
        {
            "nav": "audit",
            "m": message,
            "previous": previous,
            "plain_error": plain_error(message),
            "links": _links(message),
            "retryable": retryable,
            "retry_blocked": admin_actions.retry_unavailable_reason(node),
            "own_id": own,
            "conflict": conflict,
        },
        session=session,
    )


@router.post("/{uuid}/retry")
def retry(request: Request, node: NodeDep, _session: AdminFormSession, uuid: str) -> Response:
    """Retry one failed message; success returns to the list, failure opens the new message.

    A conflict's message is refused: a retry pulls (or pushes) again and cannot settle what
    both sides changed, yet it reported "Retry succeeded." while the conflict stayed open.
    """
    with node.db.read() as conn:
        message = audit_query.get_message(conn, uuid)
    if message is not None and message.merge_conflict_uuid and not message.success:
        return redirect(request, f"/sync2/audit/{uuid}", CONFLICT_NOT_RETRIED, kind="error")
    try:
        outcome = admin_actions.retry_message(node, uuid)
    except FhirsyncError as exc:
        return redirect(
            request, f"/sync2/audit/{uuid}", f"Retry not done: {exc.message}", kind="error"
        )
    if outcome.ok:
        target = (
            f"/sync2/audit/{outcome.new_message_uuid}"
            if outcome.new_message_uuid
            else "/sync2/audit"
        )
        return redirect(request, target, "Retry succeeded.")
    target = f"/sync2/audit/{outcome.new_message_uuid or uuid}"
    return redirect(request, target, outcome.message, kind="error")


@router.post("/retry-failed")
def retry_all(
    request: Request,
    node: NodeDep,
    _session: AdminFormSession,
    *,
    status: Annotated[str, Form()] = "FAILURE",
    operation: Annotated[str, Form()] = "ALL",
    category: Annotated[str, Form()] = "",
    origin: Annotated[str, Form()] = "",
    since: Annotated[str, Form()] = "",
    until: Annotated[str, Form()] = "",
    record: Annotated[str, Form()] = "",
) -> Response:
    """Retry every retryable failure matching the list's filters (oldest first)."""
    filters = Filters(status, operation, category, origin, since, until, record)
    back = f"/sync2/audit?{filters.query()}"
    try:
        totals = admin_actions.retry_matching(node, filters.to_filter())
    except FhirsyncError as exc:
        return redirect(request, back, f"Retry stopped: {exc.message}", kind="error")
    if not totals.messages:
        return redirect(request, back, "There was no failed message to retry for this filter.")
    text = (
        f"Retried {totals.messages} failed message(s): {totals.succeeded} succeeded, "
        f"{totals.failed} failed again."
    )
    trouble = [o.message for o in totals.runs if not o.ok and "could not be reached" in o.message]
    return redirect(
        request, back, " ".join([text, *trouble]), kind="error" if totals.failed else "ok"
    )
