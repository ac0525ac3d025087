"""``create_app``: the one place a node's HTTP application is assembled."""

from __future__ import annotations

from fastapi import FastAPI

from fhirsync import __version__
from fhirsync.server import error_responses
from fhirsync.server.auth import Authenticator
from fhirsync.server.child_auth import ChildGuard
from fhirsync.server.deps import NodeContext
from fhirsync.server.limits import BodySizeLimit, NulInUrl
from fhirsync.server.metrics import FeedRequestCounter, NodeMetrics
from fhirsync.server.routes import admin, ops, sync2_conflicts, sync2_proxy
from fhirsync.server.routes import feed as feed_routes
from fhirsync.server.routes import fhir as fhir_routes
from fhirsync.server.routes import rest as rest_routes
from fhirsync.server.routes import sync2 as sync2_routes
from fhirsync.settings import NodeConfig
from fhirsync.store.engine import Database
from fhirsync.sync import scheduler


def create_app(config: NodeConfig, db: Database) -> FastAPI:
    """Build the app for one node over its (already migrated) database."""
    app = FastAPI(
        title="fhirsync",
        version=__version__,
        # No schema document either: every endpoint but /health needs credentials (DESIGN.md
        # §5.8), and an anonymous /openapi.json listed the whole API surface.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=scheduler.lifespan(config, db),
    )
    app.state.node = NodeContext(config=config, db=db, authenticator=Authenticator(db))
    error_responses.install(app)
    app.include_router(ops.router)
    app.include_router(rest_routes.router)
    app.include_router(fhir_routes.router)
    app.include_router(feed_routes.router)
    app.include_router(sync2_routes.router)
    app.include_router(sync2_conflicts.router)
    admin.install(app)
    app.state.metrics = NodeMetrics(db)
    app.add_middleware(FeedRequestCounter, metrics=app.state.metrics)
    app.include_router(sync2_proxy.router)
    app.add_middleware(ChildGuard)
    app.add_middleware(BodySizeLimit, max_bytes=config.settings.max_body_bytes)
    app.add_middleware(NulInUrl)
    return app
