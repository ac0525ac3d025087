"""Push's pure parts: which events go up (no echo), the marker key, the scheduler's backoff."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fhirsync.records import ChangeEvent, RecordWrite
from fhirsync.settings import NodeConfig, NodeSettings, Sync2Config, SyncMethodConfig
from fhirsync.store import records as store
from fhirsync.store.audit import AuditPolicy
from fhirsync.store.engine import Database, open_database
from fhirsync.store.outbox import StoreOutboxSide, collapse, read_batch, relayable
from fhirsync.sync.push import PushContext, marker_key
from fhirsync.sync.retry import RetryPolicy
from fhirsync.sync.scheduler import push_scheduler

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def event(seq: int, uuid: str, via: str | None, action: str = "UPDATED") -> ChangeEvent:
    return ChangeEvent(seq, "patient", uuid, f"e{seq}", action, NOW, "x", via)  # type: ignore[arg-type]


def test_relayable_drops_only_pulled_changes() -> None:
    assert relayable(event(1, "a", None))
    assert relayable(event(1, "a", "child:clinic-b"))
    assert not relayable(event(1, "a", "parent"))


def test_collapse_keeps_the_newest_event_per_record_in_order() -> None:
    found = [event(1, "a", None), event(2, "b", None), event(3, "a", "parent")]
    assert [(e.record_uuid, e.seq) for e in collapse(found)] == [("b", 2), ("a", 3)]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = open_database(f"sqlite:///{tmp_path / 'push.db'}")
    yield database  # type: ignore[misc]
    database.dispose()


def body(name: str) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": name}]}


def test_read_batch_skips_records_last_changed_by_the_parent(db: Database) -> None:
    with db.write() as conn:
        store.write(conn, RecordWrite("patient", "p1", body("Local"), "me"))
        store.write(conn, RecordWrite("patient", "p2", body("Pulled"), "up", via="parent"))
        store.write(conn, RecordWrite("patient", "p3", body("Child"), "kid", via="child:kid"))
        store.write(conn, RecordWrite("patient", "p1", body("Overwritten"), "up", via="parent"))
    with db.read() as conn:
        batch = read_batch(conn, "patient", 0, 10)
        assert batch.events_read == 4
        assert batch.last_seq == 4
        assert batch.skipped_pulled == 2
        assert [i.event.record_uuid for i in batch.items] == ["p3"]
        assert batch.items[0].record is not None
        assert batch.items[0].record.origin == "kid"
        tail = read_batch(conn, "patient", 4, 10)
        assert (tail.events_read, tail.last_seq, tail.items) == (0, 4, [])
        first_two = read_batch(conn, "patient", 0, 2)
        assert [i.event.record_uuid for i in first_two.items] == ["p1"]


def test_unchanged_write_adds_nothing_to_push(db: Database) -> None:
    with db.write() as conn:
        store.write(conn, RecordWrite("patient", "p1", body("Same"), "me"))
        again = store.write(conn, RecordWrite("patient", "p1", body("Same"), "up", via="parent"))
    assert again.event is None
    with db.read() as conn:
        assert read_batch(conn, "patient", 0, 10).events_read == 1


def test_marker_key_is_per_parent_and_category(db: Database) -> None:
    local = StoreOutboxSide(db, "clinic-a", AuditPolicy(True, True))

    def ctx(parent: str) -> PushContext:
        return PushContext(local, None, RetryPolicy(), parent, "http://me")  # type: ignore[arg-type]

    a = marker_key(ctx("http://p1"), "patient")
    assert a.feed_base == "push:http://p1"
    assert a != marker_key(ctx("http://p2"), "patient")
    assert a != marker_key(ctx("http://p1"), "location")
    assert a == marker_key(ctx("http://p1/"), "patient")


def test_scheduler_backs_off_while_unreachable_and_resets(tmp_path: Path) -> None:
    config = NodeConfig(
        node_dir=tmp_path,
        settings=NodeSettings(retry_base_delay=1.0, retry_factor=2.0),
        sync2=Sync2Config(push=SyncMethodConfig(enabled=True, schedule=60)),
    )
    scheduler = push_scheduler(config, None)  # type: ignore[arg-type]
    assert not scheduler.enabled  # no parent configured
    scheduler.policy = RetryPolicy(base_delay=1.0, factor=2.0, jitter=0.0)
    assert [scheduler.next_delay("unreachable") for _ in range(3)] == [1.0, 2.0, 4.0]
    assert scheduler.next_delay("ok") == 60.0
    assert scheduler.failures == 0
    assert scheduler.next_delay("unreachable") == 1.0
