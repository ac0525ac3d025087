"""The log of `fhirsync serve`: one line per run that did something, not one per HTTP request."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from fhirsync.cli.common import setup_logging


@pytest.fixture(autouse=True)
def _restore_http_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _request() -> None:
    transport = httpx.MockTransport(lambda _request: httpx.Response(200))
    with httpx.Client(transport=transport) as client:
        client.get("http://parent.example/ws/atomfeed/patient/1")


def test_at_info_the_requests_of_a_run_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    setup_logging("INFO")
    _request()
    logging.getLogger("fhirsync.sync.scheduler").info("node child: scheduled pull ok")
    assert [r.name for r in caplog.records] == ["fhirsync.sync.scheduler"]


def test_at_debug_the_requests_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    setup_logging("DEBUG")
    _request()
    assert any(r.name == "httpx" and "HTTP Request" in r.getMessage() for r in caplog.records)
