"""Operations endpoints: ``/health`` (no authentication) and ``/metrics``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse, Response

from fhirsync import __version__
from fhirsync.server.auth import require_role
from fhirsync.server.deps import CurrentUser, NodeContext, NodeDep
from fhirsync.store import locks, runs
from fhirsync.sync.scheduler import is_scheduled, overdue_since

router = APIRouter()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _scheduler(node: NodeContext, operation: str, state: runs.RunState) -> dict[str, Any]:
    """One direction's scheduler: configured or not, a run going on, overdue, backoff and last
    error."""
    method = node.config.sync2.pull if operation == "pull" else node.config.sync2.push
    running = locks.holder(node.db, operation) is not None
    scheduled = is_scheduled(node.config, operation)
    outcome = state.outcome
    if outcome == "running" and not running:
        outcome = "interrupted"  # its process was killed mid-run; the next run resumes
    return {
        "enabled": scheduled,
        "scheduleSeconds": method.schedule,
        "running": running,
        "overdue": overdue_since(state, scheduled=scheduled, running=running) is not None,
        "lastOutcome": outcome,
        "lastStarted": _iso(state.started_at),
        "lastFinished": _iso(state.finished_at),
        "consecutiveFailures": state.consecutive_failures,
        "backoffSeconds": state.backoff_seconds,
        "nextRunAt": _iso(state.next_run_at),
        # /health needs no login: name the error's class only; the text (hosts, ids) is for
        # authenticated pages and `fhirsync status`.
        "lastErrorClass": state.last_error.split(":", 1)[0] if state.last_error else None,
    }


# HEAD too: uptime monitors and load balancers often probe with it (405 before).
@router.api_route("/health", methods=["GET", "HEAD"])
def health(node: NodeDep) -> JSONResponse:
    """Database reachability, the node's identity and its schedulers; 503 when the database is
    down. A scheduler backing off (the parent is unreachable) or overdue (no run could start: the
    database is write-locked) makes the status "degraded" but is still answered with 200: this
    node itself answers."""
    body: dict[str, Any] = {
        "status": "ok",
        "version": __version__,
        "instanceId": node.config.sync2.general.local_instance_id,
    }
    try:
        with node.db.read() as conn:
            conn.execute(text("SELECT 1"))
            states = {op: runs.get(conn, op) for op in ("pull", "push")}
        body["database"] = "ok"
        body["schedulers"] = {op: _scheduler(node, op, st) for op, st in states.items()}
    except SQLAlchemyError:
        body["status"] = "degraded"
        body["database"] = "unreachable"
        return JSONResponse(body, status_code=503)
    if any(
        s["overdue"] or (s["enabled"] and s["backoffSeconds"]) for s in body["schedulers"].values()
    ):
        body["status"] = "degraded"
    return JSONResponse(body)


@router.get("/metrics")
def metrics(request: Request, user: CurrentUser) -> Response:
    """Prometheus text for administrators and viewers (HTTP Basic, like every other endpoint)."""
    require_role(user, "admin", "viewer")
    request.app.state.metrics.watch_lag(request.app.state.node.config)
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
