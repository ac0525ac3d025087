"""A node whose database cannot be reached answers every surface with a clear 503 (try again),
not "Internal server error", and serves again as soon as the database is back."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from tests.conftest import NodeFactory
from tests.integration.api_support import admin_pages, outcome_issue

from fhirsync.testing import postgres
from fhirsync.testing.servers import NodeHandle

pytestmark = pytest.mark.postgres


def _accept_connections(url: str, accept: bool) -> None:
    """Let sessions into the database, or shut them out and end the open ones (as a database
    server that went down would)."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(accept).lower()}')
        if not accept:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


@pytest.fixture
def pg_node(node_factory: NodeFactory) -> Iterator[tuple[NodeHandle, str]]:
    """A node on its own PostgreSQL database (whatever backend the run tests)."""
    url = postgres.create_database()
    node = node_factory("node-pg", db_url=url)
    try:
        yield node, url
    finally:
        node.stop()
        _accept_connections(url, True)
        postgres.drop_database(url)


def test_pages_and_apis_say_the_database_is_unavailable(pg_node: tuple[NodeHandle, str]) -> None:
    node, url = pg_node
    with admin_pages(node) as pages, node.client() as api:
        _accept_connections(url, False)
        page = pages.get("/sync2/failures")
        assert page.status_code == 503, page.text
        assert "database" in page.text and "Internal server error" not in page.text
        fhir = api.get("/ws/fhir2/R4/Patient")
        assert fhir.status_code == 503, fhir.text
        assert outcome_issue(fhir)["code"] == "transient"
        rest = api.get("/ws/rest/v1/visittype")
        assert rest.status_code == 503, rest.text
        assert "database" in rest.json()["error"]["message"]
        _accept_connections(url, True)
        assert pages.get("/sync2/failures").status_code == 200
