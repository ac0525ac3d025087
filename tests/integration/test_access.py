"""Who may reach what: admin-page sessions that must end, and surfaces that must need a login."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from tests.integration.api_support import admin_pages, post_form

from fhirsync.server.app import create_app
from fhirsync.server.sessions import SESSION_COOKIE
from fhirsync.store import users
from fhirsync.testing.servers import NodeHandle


def test_a_new_password_ends_the_sessions_signed_in_with_the_old_one(node: NodeHandle) -> None:
    with admin_pages(node) as browser:
        assert browser.get("/sync2/").status_code == 200
        _config, db = node.open()
        try:
            with db.write() as conn:
                users.set_password(conn, "admin", "a-brand-new-password-2026")
        finally:
            db.dispose()
        # A stolen cookie must not outlive the password change meant to lock its thief out.
        for path in ("/sync2/", "/sync2/config"):
            gone = browser.get(path, follow_redirects=False)
            assert gone.status_code == 303, path
            assert gone.headers["location"].startswith("/sync2/login")
    with admin_pages(node, password="a-brand-new-password-2026") as browser:
        assert browser.get("/sync2/").status_code == 200


@pytest.mark.postgres
def test_signing_out_ends_that_session_for_a_kept_copy_of_its_cookie(node: NodeHandle) -> None:
    # The cookie carries the whole session: after "Sign out" a copy taken before (a shared
    # computer's browser profile, a proxy log) still opened the pages until it expired.
    with admin_pages(node) as browser, admin_pages(node) as elsewhere:
        kept = browser.cookies[SESSION_COOKIE]
        assert browser.get("/sync2/").status_code == 200
        signed_out = post_form(browser, "/sync2/", "/sync2/logout")
        assert signed_out.status_code == 303
        assert signed_out.headers["location"].startswith("/sync2/login")
        with httpx.Client(base_url=node.base_url, timeout=60.0) as thief:
            for path in ("/sync2/", "/sync2/config"):
                gone = thief.get(path, headers={"Cookie": f"{SESSION_COOKIE}={kept}"})
                assert gone.status_code == 303, path
                assert gone.headers["location"].startswith("/sync2/login"), path
        # The same user's other session goes on.
        assert elsewhere.get("/sync2/").status_code == 200
    with admin_pages(node) as browser:  # and signing in again works
        assert browser.get("/sync2/").status_code == 200


def test_nothing_but_health_and_sign_in_answers_without_credentials(node: NodeHandle) -> None:
    with httpx.Client(base_url=node.base_url, timeout=30.0) as anonymous:
        for route in routes_of(node):
            if route in ("/health", "/sync2/login"):
                continue
            answer = anonymous.get(route.replace("{", "").replace("}", ""), follow_redirects=False)
            # 401 (APIs), a redirect to the sign-in page (admin pages), or no such page at all.
            assert answer.status_code in (303, 401, 404, 405), (route, answer.status_code)


def routes_of(node: NodeHandle) -> list[str]:
    """Every GET path the node's app serves (schema documents included), but static files."""
    config, db = node.open()
    try:
        app = create_app(config, db)
    finally:
        db.dispose()
    paths = {app.openapi_url, app.docs_url, app.redoc_url}
    pending: list[Any] = list(app.routes)
    while pending:
        route = pending.pop()
        # FastAPI keeps each included router as one entry holding the router's own routes.
        included = getattr(route, "original_router", None)
        if included is not None:
            pending.extend(included.routes)
        elif isinstance(route, APIRoute) and "GET" in route.methods:
            paths.add(route.path)
    found = sorted(p for p in paths if p)
    assert len(found) > 20, found  # the walk reached the routers
    return found
