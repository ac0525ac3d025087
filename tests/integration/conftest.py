"""Fixtures of the integration tests beyond those of ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fhirsync.testing.servers import NodeHandle


@pytest.fixture
def client(node: NodeHandle) -> Iterator[httpx.Client]:
    """An httpx client for the running ``node``, signed in as its admin."""
    with node.client() as c:
        yield c
