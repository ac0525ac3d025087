"""The admin pages refuse to be framed by another page (clickjacking)."""

from __future__ import annotations

import pytest
from tests.integration.api_support import admin_pages

from fhirsync.testing.servers import NodeHandle


@pytest.mark.parametrize(
    "path", ["/sync2/login", "/sync2/", "/sync2/live", "/sync2/failures", "/sync2/audit/missing"]
)
def test_admin_pages_may_not_be_framed(node: NodeHandle, path: str) -> None:
    # The session cookie is SameSite=Lax, which another site cannot use; but another web app on
    # the same host (OpenMRS beside a fhirsync agent: same site, other port) could frame the
    # pages and have an administrator click Resolve, Retry or Pull now unseen.
    with admin_pages(node) as client:
        response = client.get(path)
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
