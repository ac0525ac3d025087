"""Audit log pages: the filtered list, one message's details, Retry and "Retry all failed"."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from fhirsync.errors import FhirsyncError, RecordNotFound
from fhirsync.server.deps import NodeDep
from fhirsync.server.routes import admin_actions
from fhirsync.server.routes.admin_common import AdminFormSession, PageSession, page, redirect
from fhirsync.store import audit_query
from fhirsync.store.audit_query import AuditFilter, AuditMessage
from fhirsync.sync import manual

router = APIRouter(prefix="/sync2/audit", include_in_schema=False)

PAGE_SIZE = 20

# What an engine error class means, for people who do not read stack traces.
PLAIN_ERRORS = {
    "InvalidResource": "The record was rejected because its content is not valid.",
    "RecordNotFound": "The record no longer exists where the feed said it would be.",
    "RecordGone": "The record was deleted on the other side.",
    "RemoteRejected": "The other node refused this record.",
    "DependencyMissing": "A record this one refers to (for example its patient) is missing or "
    "failed, so this one waits for it.",
    "ConnectionFailed": "The other node could not be reached (network problem).",
    "RequestTimeout": "The other node did not answer in time.",
    "ServerUnavailable": "The other node had an internal problem (HTTP 5xx).",
    "VersionMismatch": "The record changed on both sides at the same time.",
    "ConflictError": "The record changed on both sides (a conflict).",
    "Unauthenticated": "The other node did not accept this node's user name or password.",
    "Forbidden": "The other node does not allow this node to do this.",
    "ConfigurationError": "This node's configuration is incomplete or invalid.",
    "Dismissed": "An administrator gave up on this record; it will not be retried.",
}


@dataclass(frozen=True, slots=True)
class Filters:
    """The list's filter form, as the query string carries it."""

    status: str = "ALL"
    operation: str = "ALL"
    category: str = ""
    origin: str = ""
    since: str = ""
    until: str = ""

    def to_filter(self) -> AuditFilter:
        """The store's filter for these form values."""
        return AuditFilter(
            success={"SUCCESS": True, "FAILURE": False}.get(self.status.upper()),
            operation=self.operation if self.operation.upper() in ("PULL", "PUSH") else None,
            resource_name=self.category or None,
            creator_instance_id=self.origin or None,
            since=_parse_time(self.since, "since"),
            until=_parse_time(self.until, "until"),
        )

    def query(self, **extra: object) -> str:
        """The query string of these filters (plus ``extra``), for links."""
        values: dict[str, str] = {}
        for name in ("status", "operation", "category", "origin", "since", "until"):
            value = getattr(self, name)
            if value and value != "ALL":
                values[name] = value
        values.update({k: str(v) for k, v in extra.items()})
        return urlencode(values)


def _parse_time(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise admin_actions.Unavailable(
            f"The '{name}' time is not a date and time: {value!r}"
        ) from exc


def plain_error(message: AuditMessage) -> str | None:
    """The failure of ``message`` in plain words (None for a success)."""
    if message.success:
        return None
    if message.merge_conflict_uuid:
        return PLAIN_ERRORS["ConflictError"]
    known = PLAIN_ERRORS.get(message.error_class or "")
    first_line = (message.details or "").strip().splitlines()[0:1]
    reason = first_line[0] if first_line else "No reason was recorded."
    return f"{known} ({reason})" if known else reason


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
    page_no: Annotated[int, Query(alias="page", ge=1)] = 1,
) -> Response:
    """Audit messages newest first, filtered and paginated."""
    filters = Filters(status, operation, category, origin, since, until)
    error = None
    try:
        flt = filters.to_filter()
    except admin_actions.Unavailable as exc:
        flt, error = AuditFilter(), exc.message
    with node.db.read() as conn:
        listing = audit_query.list_messages(conn, flt, page=page_no, page_size=PAGE_SIZE)
        origins = audit_query.origins(conn)
        categories = audit_query.resource_names(conn)
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
            "retry_blocked": admin_actions.retry_unavailable_reason(),
            "own_id": node.config.sync2.general.local_instance_id,
        },
        session=session,
    )


@router.get("/{uuid}")
def audit_detail(request: Request, node: NodeDep, session: PageSession, uuid: str) -> Response:
    """One message: the fields of spec §9, the error in plain words, Retry or its next message."""
    with node.db.read() as conn:
        message = audit_query.get_message(conn, uuid)
        previous = audit_query.previous_message(conn, uuid)
    if message is None:
        raise RecordNotFound(f"There is no audit message {uuid}.")
    own = node.config.sync2.general.local_instance_id
    retryable = (
        not message.success
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
            "retry_blocked": admin_actions.retry_unavailable_reason(),
            "own_id": own,
        },
        session=session,
    )


@router.post("/{uuid}/retry")
def retry(request: Request, node: NodeDep, _session: AdminFormSession, uuid: str) -> Response:
    """Retry one failed message; success returns to the list, failure opens the new message."""
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
) -> Response:
    """Retry every retryable failure matching the list's filters (oldest first)."""
    filters = Filters(status, operation, category, origin, since, until)
    back = f"/sync2/audit?{filters.query()}"
    try:
        totals = manual.retry_matching(node.config, node.db, filters.to_filter())
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
