"""The audit list's filters, shared by `fhirsync audit` and the audit page (server/audit_view)."""

from __future__ import annotations

from datetime import datetime

import pytest

from fhirsync.cli.audit import _filters
from fhirsync.errors import RequestError
from fhirsync.server.audit_view import Filters


def test_a_time_that_is_none_is_a_request_error_naming_the_field() -> None:
    with pytest.raises(RequestError, match="'until' time is not a date and time"):
        Filters(until="yesterday").to_filter()


def test_the_cli_says_which_format_the_times_take() -> None:
    with pytest.raises(RequestError, match=r"'since' time .* \(--since/--until take ISO 8601\)"):
        _filters("ALL", "ALL", "", "", "soon", "")


def test_the_cli_filters_are_the_page_filters() -> None:
    found = _filters("failure", "push", "patient", "child-a", "2026-01-02T03:04:05", "")
    flt = found.to_filter()
    assert (flt.success, flt.operation, flt.resource_name, flt.creator_instance_id) == (
        False,
        "PUSH",
        "patient",
        "child-a",
    )
    assert flt.since == datetime(2026, 1, 2, 3, 4, 5)
    assert (
        found.query()
        == "status=FAILURE&operation=PUSH&category=patient&origin=child-a&since=2026-01-02T03%3A04%3A05"
    )
