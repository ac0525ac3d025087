"""Parked failures page: records that failed every automatic try, with Retry and Dismiss."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from starlette.responses import Response

from fhirsync.errors import FhirsyncError
from fhirsync.server.deps import NodeContext, NodeDep
from fhirsync.server.routes import admin_actions
from fhirsync.server.routes.admin_common import AdminFormSession, PageSession, page, redirect
from fhirsync.store import failures
from fhirsync.store.failures import Failure

router = APIRouter(prefix="/sync2/failures", include_in_schema=False)


STATUS_WORDS = {
    "parked": "Parked: gave up after the automatic tries",
    "retrying": "Will be retried automatically",
    "waiting": "Waiting for a record it depends on",
}


SHOWN = 500
"""Rows on the page at most: a broken category can park tens of thousands."""

FailureId = Annotated[int, Path(ge=1, le=2**63 - 1)]
"""A failure's id in a URL: larger numbers fit no database integer (400, not a crash)."""


def _open_failures(node: NodeContext) -> tuple[list[Failure], int]:
    """The rows to show (parked first, newest first) and how many failures are open in all."""
    with node.db.read() as conn:
        shown = failures.for_review(conn, SHOWN)
        total = sum(failures.open_counts(conn).values())
    return shown, total


@router.get("")
def failures_page(request: Request, node: NodeDep, session: PageSession) -> Response:
    """Parked failures, newest first, with the reason in plain words."""
    rows, total = _open_failures(node)
    return page(
        request,
        "failures.html",
        {
            "nav": "failures",
            "rows": rows,
            "total": total,
            "status_words": STATUS_WORDS,
            "retry_blocked": admin_actions.failure_actions_unavailable_reason(node),
        },
        session=session,
    )


@router.post("/{failure_id}/retry")
def retry(request: Request, node: NodeDep, _s: AdminFormSession, failure_id: FailureId) -> Response:
    """Try a parked record once more, now."""
    try:
        outcome = admin_actions.retry_failure(node, failure_id)
    except FhirsyncError as exc:
        return redirect(request, "/sync2/failures", f"Retry not done: {exc.message}", kind="error")
    return redirect(
        request, "/sync2/failures", outcome.message, kind="ok" if outcome.ok else "error"
    )


@router.post("/{failure_id}/dismiss")
def dismiss(
    request: Request,
    node: NodeDep,
    session: AdminFormSession,
    failure_id: FailureId,
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Give up on a parked record, with a reason that is kept in the audit log."""
    try:
        outcome = admin_actions.dismiss_failure(node, failure_id, reason, session.user)
    except FhirsyncError as exc:
        return redirect(request, "/sync2/failures", f"Not dismissed: {exc.message}", kind="error")
    return redirect(request, "/sync2/failures", outcome.message)
