"""Helpers for the tests of a node's HTTP APIs and admin pages: a valid Patient, user accounts,
error bodies, a signed-in admin-page client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from fhirsync.store import users
from fhirsync.testing.servers import NodeHandle

FHIR_JSON = "application/fhir+json"


def patient(**extra: Any) -> dict[str, Any]:
    """A valid FHIR R4 Patient (family Mensah, male) with ``extra`` fields set or replaced."""
    return {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Mensah", "given": ["Kwame"]}],
        "gender": "male",
        "birthDate": "1984-03-09",
        **extra,
    }


def add_user(node: NodeHandle, name: str, role: users.Role, instance_id: str | None = None) -> None:
    """Add the account ``name`` (password ``{name}-password``) to the node's store."""
    _config, db = node.open()
    try:
        with db.write() as conn:
            users.add(conn, name, f"{name}-password", role, instance_id)
    finally:
        db.dispose()


def as_user(node: NodeHandle, name: str) -> httpx.Client:
    """An httpx client for the node, signed in as an account made by :func:`add_user`."""
    return httpx.Client(base_url=node.base_url, auth=(name, f"{name}-password"), timeout=30.0)


def outcome_issue(response: httpx.Response) -> dict[str, Any]:
    """The first issue of a FHIR OperationOutcome answer (asserting it is one, as FHIR JSON)."""
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    first: dict[str, Any] = body["issue"][0]
    return first


def csrf_token(page_html: str) -> str:
    """The CSRF token of the first form on an admin page."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', page_html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@contextmanager
def admin_pages(
    node: NodeHandle, name: str = "admin", password: str | None = None
) -> Iterator[httpx.Client]:
    """An httpx client signed in to the admin pages (``/sync2/``) through the login form."""
    with httpx.Client(base_url=node.base_url, timeout=60.0) as client:
        token = csrf_token(client.get("/sync2/login").text)
        response = client.post(
            "/sync2/login",
            data={
                "username": name,
                "password": password or node.admin_password,
                "csrf_token": token,
            },
        )
        assert response.status_code == 303, response.text
        yield client


def post_form(client: httpx.Client, form_page: str, action: str, **fields: str) -> httpx.Response:
    """Post ``fields`` to ``action`` with the CSRF token of ``form_page`` (redirects not followed)."""
    token = csrf_token(client.get(form_page).text)
    return client.post(action, data={"csrf_token": token, **fields})
