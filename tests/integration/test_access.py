"""Who may reach what: admin-page sessions that must end, and surfaces that must need a login."""

from __future__ import annotations

from tests.integration.api_support import admin_pages

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
