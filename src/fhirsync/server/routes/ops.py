"""Operations endpoints: ``/health`` (no authentication) and ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse, Response

from fhirsync import __version__
from fhirsync.server.auth import require_role
from fhirsync.server.deps import CurrentUser, NodeDep

router = APIRouter()


@router.get("/health")
def health(node: NodeDep) -> JSONResponse:
    """Database reachability and the node's identity; 503 when the database is down."""
    body: dict[str, Any] = {
        "status": "ok",
        "version": __version__,
        "instanceId": node.config.sync2.general.local_instance_id,
    }
    try:
        with node.db.read() as conn:
            conn.execute(text("SELECT 1"))
        body["database"] = "ok"
    except SQLAlchemyError:
        body["status"] = "degraded"
        body["database"] = "unreachable"
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


@router.get("/metrics")
def metrics(request: Request, user: CurrentUser) -> Response:
    """Prometheus text for administrators and viewers (HTTP Basic, like every other endpoint)."""
    require_role(user, "admin", "viewer")
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
