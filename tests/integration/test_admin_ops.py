"""/metrics (authenticated, per-app registry) and audit retention at start-up, on a running node."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from tests.conftest import NodeFactory

from fhirsync.store import audit_query
from fhirsync.store.audit_query import AuditFilter, AuditMessage
from fhirsync.testing.servers import NodeHandle

pytestmark = pytest.mark.postgres


def _insert(node: NodeHandle, *, age_days: float, success: bool, operation: str = "PULL") -> str:
    moment = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=age_days)
    message = AuditMessage(
        id=None,
        uuid=str(uuid.uuid4()),
        success=success,
        timestamp=moment,
        resource_name="patient",
        operation=operation,
        creator_instance_id=node.instance_id,
    )
    _config, db = node.open()
    try:
        with db.write() as conn:
            audit_query.insert_message(conn, message)
    finally:
        db.dispose()
    return message.uuid


def test_metrics_need_authentication_and_report_sync_figures(node_factory: NodeFactory) -> None:
    node = node_factory("central")
    _insert(node, age_days=0, success=True)
    _insert(node, age_days=0, success=False)
    assert httpx.get(f"{node.base_url}/metrics").status_code == 401
    with node.client() as client:
        client.get("/ws/atomfeed/patient/recent")
        text = client.get("/metrics").text
    assert 'fhirsync_audit_records{operation="pull",outcome="success"} 1.0' in text
    assert 'fhirsync_audit_records{operation="pull",outcome="failure"} 1.0' in text
    assert 'fhirsync_audit_failures_by_category{category="patient"} 1.0' in text
    assert "fhirsync_feed_requests_total{" in text
    assert "fhirsync_last_run_applied" in text


def test_two_apps_keep_separate_registries(node_factory: NodeFactory) -> None:
    first, second = node_factory("one"), node_factory("two")
    with first.client() as client:
        for _ in range(3):
            client.get("/ws/atomfeed/patient/recent")
    with second.client() as client:
        text = client.get("/metrics").text
    assert "fhirsync_feed_requests_total{" not in text


def test_old_audit_rows_are_removed_at_start_up(node_factory: NodeFactory) -> None:
    node = node_factory("central", extra_settings={"audit_retention_days": 30})
    old = _insert(node, age_days=45, success=False)
    recent = _insert(node, age_days=2, success=False)
    node.stop()
    node.start()
    _config, db = node.open()
    try:
        with db.read() as conn:
            kept = [m.uuid for m in audit_query.list_messages(conn, AuditFilter()).items]
    finally:
        db.dispose()
    assert kept == [recent] and old not in kept


def test_a_node_that_keeps_serving_removes_audit_rows_as_they_grow_old(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retention ran at start-up, and later only when someone opened the dashboard: a clinic
    # server serving for months with nobody on its admin pages kept every audit row.
    monkeypatch.setattr("fhirsync.store.retention.EVERY_SECONDS", 0.05, raising=False)
    node = node_factory("central", extra_settings={"audit_retention_days": 30})
    old = _insert(node, age_days=45, success=True)  # as if it had aged while serving
    recent = _insert(node, age_days=2, success=True)
    deadline = time.monotonic() + 10
    kept = [old, recent]
    while old in kept and time.monotonic() < deadline:
        time.sleep(0.05)
        kept = _kept(node)
    assert kept == [recent]


def _kept(node: NodeHandle) -> list[str]:
    _config, db = node.open()
    try:
        with db.read() as conn:
            return [m.uuid for m in audit_query.list_messages(conn, AuditFilter()).items]
    finally:
        db.dispose()
