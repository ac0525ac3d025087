"""Shared fixtures: database URLs (SQLite, or PostgreSQL with FHIRSYNC_TEST_DB=postgresql) and
real nodes served on 127.0.0.1."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fhirsync.testing import postgres
from fhirsync.testing.servers import NodeHandle, create_node

USE_POSTGRES = os.environ.get("FHIRSYNC_TEST_DB", "sqlite") == "postgresql"

# The CLI's rich consoles keep the width COLUMNS gives when they are made. Made here, before any
# test, they follow each CliRunner(env={"COLUMNS": ...}) instead of the first test that happened
# to import them (pytest-xdist deals the tests out in another order, and one saw 80 columns).
os.environ.pop("COLUMNS", None)
importlib.import_module("fhirsync.cli.common")
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def pytest_report_header() -> str:
    return f"fhirsync test database: {'postgresql' if USE_POSTGRES else 'sqlite'}"


@pytest.fixture
def db_url_factory(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Makes one empty database URL per call, on the backend this run tests."""
    made: list[str] = []

    def make(name: str) -> str:
        url = postgres.create_database() if USE_POSTGRES else f"sqlite:///{tmp_path / name}.db"
        made.append(url)
        return url

    yield make
    if USE_POSTGRES:
        for url in made:
            postgres.drop_database(url)


@pytest.fixture
def db_url(db_url_factory: Callable[[str], str]) -> str:
    """One empty database URL."""
    return db_url_factory("main")


NodeFactory = Callable[..., NodeHandle]


@pytest.fixture
def node_factory(tmp_path: Path, db_url_factory: Callable[[str], str]) -> Iterator[NodeFactory]:
    """Creates nodes (``start=True`` serves them in a thread); stops them all at the end."""
    handles: list[NodeHandle] = []

    def make(instance_id: str, *, start: bool = True, **kwargs: object) -> NodeHandle:
        kwargs.setdefault("db_url", db_url_factory(instance_id))
        handle = create_node(tmp_path / "nodes", instance_id, **kwargs)  # type: ignore[arg-type]
        handles.append(handle)
        return handle.start() if start else handle

    yield make
    for handle in reversed(handles):
        handle.stop()
        handle.kill()


@pytest.fixture
def node(node_factory: NodeFactory) -> NodeHandle:
    """One running node with an empty database."""
    return node_factory("node-a")


@pytest.fixture
def reference_dir() -> Path:
    """``shared/reference`` (real OpenMRS sample data)."""
    assert REFERENCE.is_dir(), f"reference data missing at {REFERENCE}"
    return REFERENCE
