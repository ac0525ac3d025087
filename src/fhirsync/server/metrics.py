"""Prometheus metrics of one node, in a registry of its own (never the process-global one).

Sync figures are read from the database at scrape time (audit rows, open failures, run state), so
every process serving the node reports the same numbers. Feed requests are counted per process by
a small ASGI middleware.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhirsync.settings import NodeConfig
from fhirsync.store import audit_query, failures, runs
from fhirsync.store.engine import Database
from fhirsync.sync import lag

FEED_PREFIX = "/ws/atomfeed"


class SyncCollector(Collector):
    """Records pulled and pushed, failures and run durations, from the node's database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        """One consistent read of the sync tables per scrape."""
        with self._db.read() as conn:
            by_operation = audit_query.counts_by_operation(conn)
            failed_by_category = audit_query.counts_by_category(conn, success=False)
            open_failures = failures.open_counts(conn)
            states = [runs.get(conn, op) for op in ("pull", "push")]
        records = GaugeMetricFamily(
            "fhirsync_audit_records",
            "Audited records by operation and outcome (kept rows; see audit_retention_days).",
            labels=["operation", "outcome"],
        )
        for (operation, ok), count in sorted(by_operation.items()):
            records.add_metric([operation.lower(), "success" if ok else "failure"], count)
        yield records
        by_category = GaugeMetricFamily(
            "fhirsync_audit_failures_by_category",
            "Failed audited records per category.",
            labels=["category"],
        )
        for category, count in sorted(failed_by_category.items()):
            by_category.add_metric([category], count)
        yield by_category
        open_gauge = GaugeMetricFamily(
            "fhirsync_open_failures",
            "Records that failed and are not applied yet, by status.",
            labels=["operation", "status"],
        )
        for (operation, status), count in sorted(open_failures.items()):
            open_gauge.add_metric([operation.lower(), status], count)
        yield open_gauge
        yield from _run_metrics(states)


def _run_metrics(states: list[runs.RunState]) -> Iterator[Metric]:
    duration = GaugeMetricFamily(
        "fhirsync_last_run_duration_seconds",
        "Duration of the last finished run.",
        labels=["operation"],
    )
    applied = GaugeMetricFamily(
        "fhirsync_last_run_applied", "Records applied by the last run.", labels=["operation"]
    )
    failed = GaugeMetricFamily(
        "fhirsync_last_run_failed", "Records that failed in the last run.", labels=["operation"]
    )
    consecutive = GaugeMetricFamily(
        "fhirsync_consecutive_failed_runs", "Runs in a row that failed.", labels=["operation"]
    )
    for state in states:
        label = [state.operation.lower()]
        if state.started_at and state.finished_at and state.finished_at >= state.started_at:
            duration.add_metric(label, (state.finished_at - state.started_at).total_seconds())
        applied.add_metric(label, state.applied)
        failed.add_metric(label, state.failed)
        consecutive.add_metric(label, state.consecutive_failures)
    yield from (duration, applied, failed, consecutive)


class LagCollector(Collector):
    """Lag per category: events behind the parent's feed and local events not yet pushed.

    The parent's side is one short request per scrape at most (cached briefly by ``sync.lag``).
    """

    def __init__(self, config: NodeConfig, db: Database) -> None:
        self._config = config
        self._db = db

    def collect(self) -> Iterator[Metric]:
        """Read the lag once per scrape."""
        found = lag.gather(self._config, self._db)
        behind = GaugeMetricFamily(
            "fhirsync_lag_parent_events",
            "Events in the parent's feed not pulled yet (a lower bound for some Java feeds).",
            labels=["category"],
        )
        unpushed = GaugeMetricFamily(
            "fhirsync_lag_unpushed_events",
            "Local events (and children's) that the next push will send.",
            labels=["category"],
        )
        for row in found.categories:
            if row.pulled and row.behind_parent is not None:
                behind.add_metric([row.category], row.behind_parent)
            if row.unpushed is not None:
                unpushed.add_metric([row.category], row.unpushed)
        yield behind
        yield unpushed
        if self._config.parent_url is not None:
            reachable = GaugeMetricFamily(
                "fhirsync_parent_reachable",
                "1 when the parent answered the last lag question, 0 otherwise.",
            )
            reachable.add_metric([], 0 if found.parent_error else 1)
            yield reachable


class NodeMetrics:
    """The registry of one app and the counters its middleware updates."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.registry = CollectorRegistry(auto_describe=True)
        self.feed_requests = Counter(
            "fhirsync_feed_requests",
            "Atom feed requests served by this process, by status class.",
            labelnames=["status"],
            registry=self.registry,
        )
        self.registry.register(SyncCollector(db))
        self._lag_registered = False
        self._lock = threading.Lock()

    def watch_lag(self, config: NodeConfig) -> None:
        """Add the lag gauges (once; the node's configuration is known after the app is built)."""
        with self._lock:
            if not self._lag_registered:
                self._lag_registered = True
                self.registry.register(LagCollector(config, self._db))


class FeedRequestCounter:
    """ASGI middleware counting responses to ``/ws/atomfeed`` requests."""

    def __init__(self, app: ASGIApp, metrics: NodeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; count it when a feed response starts."""
        if scope["type"] != "http" or not scope["path"].startswith(FEED_PREFIX):
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(str(message["status"]))
                self.metrics.feed_requests.labels(f"{status // 100}xx").inc()
            await send(message)

        await self.app(scope, receive, counting_send)
