"""Filters (spec §3.6), the retry policy, and run status values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhirsync.errors import (
    ConnectionFailed,
    DependencyMissing,
    InvalidResource,
    MalformedFeed,
    RecordNotFound,
    Unauthenticated,
)
from fhirsync.records import FeedEntry
from fhirsync.settings import NodeSettings
from fhirsync.sync.filters import FilterChain, location_matches, parse_filter_tag
from fhirsync.sync.retry import Decision, RetryPolicy

TAG = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><feedFilter>'
    "<beanName>atomfeed.locationFeedFilterStrategy</beanName>"
    "<filter>Kenya%Nairobi%null%Westlands%00100</filter></feedFilter>"
)


def _entry(origin: str | None = None, tags: tuple[str, ...] = ()) -> FeedEntry:
    return FeedEntry("tag:1", "patient", "CREATED", {"fhir": "/x"}, origin=origin, filter_tags=tags)


@pytest.mark.parametrize(
    ("setting", "ok"),
    [
        ("*%*%*%*%*", True),
        ("kenya%*%*%*%*", True),
        ("Kenya%Mombasa%*%*%*", False),
        ("*%*%*%*", False),
    ],
)
def test_location_filter(setting: str, ok: bool) -> None:
    assert location_matches("Kenya%Nairobi%null%Westlands%00100", setting) is ok
    assert FilterChain("child", setting).accepts(_entry(tags=(TAG,))) is ok


def test_unknown_bean_is_synced_and_own_origin_is_skipped() -> None:
    other = "<feedFilter><beanName>x.y</beanName><filter>a</filter></feedFilter>"
    chain = FilterChain("child", "Peru%*%*%*%*")
    assert chain.accepts(_entry(tags=(other, TAG)))
    assert not chain.accepts(_entry(origin="child"))
    assert chain.accepts(_entry(origin="parent"))
    assert parse_filter_tag("CREATED") is None


def test_settings_hash_changes_with_filter_settings() -> None:
    a = FilterChain("child").settings_hash("patient")
    assert a == FilterChain("child").settings_hash("patient")
    assert a != FilterChain("child", "Kenya%*%*%*%*").settings_hash("patient")
    assert a != FilterChain("child").settings_hash("visit")


class _NoVisits:
    name = "no-visits"

    def accepts(self, entry: FeedEntry, instance_id: str) -> bool:
        return entry.category != "visit"


def test_plugin_filter() -> None:
    chain = FilterChain("child", plugins=(_NoVisits(),))
    assert chain.accepts(_entry())
    assert not chain.accepts(FeedEntry("tag:2", "visit", "CREATED", {}))
    assert chain.settings_hash("x") != FilterChain("child").settings_hash("x")


def test_retry_policy_backoff_and_decisions() -> None:
    policy = RetryPolicy.from_settings(NodeSettings(retry_base_delay=2, retry_max_delay=10))
    assert [policy.delay(n, rand=lambda: 0.5) for n in (1, 2, 3, 4)] == [2, 4, 8, 10]
    assert 1.8 <= policy.delay(1) <= 2.2
    assert policy.decide(ConnectionFailed("x")) is Decision.STOP_RUN
    assert policy.decide(Unauthenticated("x")) is Decision.STOP_RUN
    assert policy.decide(MalformedFeed("x")) is Decision.STOP_CATEGORY
    assert policy.decide(DependencyMissing("x"), attempt=99) is Decision.WAIT
    assert policy.decide(InvalidResource("x"), attempt=1) is Decision.RETRY
    assert policy.decide(RecordNotFound("x"), attempt=3) is Decision.PARK
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert policy.next_try(1, now) > now
    with pytest.raises(ValueError):
        policy.decide(ValueError("not ours"))


def test_retry_policy_delay_stays_at_its_cap_however_many_attempts() -> None:
    # record_max_attempts is unbounded and the scheduler counts failed runs without end: the
    # 1025th attempt of the default policy raised OverflowError (2.0 ** 1024).
    policy = RetryPolicy.from_settings(NodeSettings(record_max_attempts=1_000_000))
    assert policy.delay(1025, rand=lambda: 0.5) == policy.max_delay
    assert policy.delay(10**9, rand=lambda: 0.5) == policy.max_delay
    steep = RetryPolicy(base_delay=1, factor=1000, max_delay=60, jitter=0)
    assert steep.delay(200) == 60
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert policy.next_try(5000, now) <= now + timedelta(seconds=policy.max_delay * 1.1)
    # A cap beyond the calendar (retry_max_delay has no upper bound) still gives a time.
    endless = RetryPolicy(base_delay=1, factor=2, max_delay=1e300, jitter=0)
    assert endless.next_try(5000, now) > now
