"""`setup_logging`: serve's log holds fhirsync's lines, not one line per HTTP request."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from fhirsync.cli.common import setup_logging

LOGGERS = ("", "httpx", "httpcore")  # "" is the root logger


@pytest.fixture(autouse=True)
def _restore_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _setup(level: str) -> None:
    # As in a fresh `serve` process: pytest's own handlers make basicConfig leave the root's
    # level alone, so set it as basicConfig would there.
    logging.getLogger().setLevel(level)
    setup_logging(level)


def test_at_info_the_http_client_does_not_log_every_request() -> None:
    # The README promises one line per scheduled run that moved records; httpx logs every
    # request at INFO, which is ~30 feed requests per run for a child.
    _setup("INFO")
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert not logging.getLogger("httpcore").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)


def test_at_debug_every_request_is_logged() -> None:
    _setup("DEBUG")
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
