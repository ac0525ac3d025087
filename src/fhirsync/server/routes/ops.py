"""Operations endpoints: ``/health`` (no authentication) and ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse

from fhirsync import __version__
from fhirsync.server.deps import NodeDep

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
