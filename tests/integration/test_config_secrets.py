"""The Configuration page never shows a password, not even one inside the database URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.conftest import NodeFactory
from tests.integration.api_support import add_user, admin_pages

from fhirsync.testing import postgres
from fhirsync.testing.servers import NodeHandle

pytestmark = pytest.mark.postgres

PASSWORD = "db-pass-5f2c"


@pytest.fixture
def node_with_db_password(node_factory: NodeFactory) -> Iterator[NodeHandle]:
    """A node whose ``db_url`` holds a password (the test server trusts any)."""
    url = postgres.create_database()
    with_password = url.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    node = node_factory("node-pg", db_url=with_password)
    try:
        yield node
    finally:
        node.stop()
        postgres.drop_database(url)


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_the_database_password_is_not_on_the_configuration_page(
    node_with_db_password: NodeHandle, role: str
) -> None:
    # db_url was shown as it is: a read-only viewer could read the database password.
    node = node_with_db_password
    if role == "viewer":
        add_user(node, "watcher", "viewer")
    name, password = ("watcher", "watcher-password") if role == "viewer" else ("admin", None)
    with admin_pages(node, name, password) as client:
        shown = client.get("/sync2/config").text
    assert PASSWORD not in shown
    assert "postgres:***@127.0.0.1" in shown
