"""The pull loop over a real store with an in-memory feed and client (fast, exact assertions)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhirsync import categories
from fhirsync.categories import Category
from fhirsync.clients.base import FetchResult, OutgoingChange, RecordRef, SendResult, SourceClient
from fhirsync.errors import ConnectionFailed
from fhirsync.records import Action, FeedEntry
from fhirsync.store import failures
from fhirsync.store.audit import AuditPolicy
from fhirsync.store.engine import Database, open_database
from fhirsync.store.local import StoreLocalSide
from fhirsync.sync.filters import FilterChain
from fhirsync.sync.pull import marker_key, pull_category
from fhirsync.sync.pull_context import PullContext
from fhirsync.sync.retry import RetryPolicy
from fhirsync.sync.status import RecordFailed, RunEvent

PARENT = "http://parent:9"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def patient(n: int, family: str = "Doe") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": uid(n), "name": [{"family": family}]}


def encounter(n: int, subject: int) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": uid(n),
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": f"Patient/{uid(subject)}"},
    }


@dataclass
class Chunk:
    entries: Sequence[FeedEntry]
    page: int | None
    recovered: str | None = None


@dataclass
class FakeParent:
    """A parent: a feed per category (pages of entries) and the current bodies."""

    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    feed: dict[str, list[FeedEntry]] = field(default_factory=dict)
    page_size: int = 3
    down: bool = False
    fetches: int = 0
    counter: int = 0

    def event(self, category: str, n: int, action: Action, origin: str | None = "parent") -> None:
        self.counter += 1
        cat = categories.get(category)
        entry = FeedEntry(f"tag:{self.counter}", category, action, cat.links(uid(n)), origin=origin)
        self.feed.setdefault(category, []).append(entry)

    def read(
        self, category: str, *, after_entry_id: str | None = None, page: int | None = None
    ) -> Iterator[Chunk]:
        entries = self.feed.get(category, [])
        ids = [e.entry_id for e in entries]
        start = ids.index(after_entry_id) + 1 if after_entry_id else 0
        for first in range(start, len(entries), self.page_size):
            if self.down:
                raise ConnectionFailed("parent down")
            yield Chunk(entries[first : first + self.page_size], first // self.page_size + 1)

    # transport
    def choose(
        self, category: Category, links: Mapping[str, str], preferred: str | None = None
    ) -> SourceClient:
        return self  # type: ignore[return-value]

    def extract_uuid(self, category: Category, links: Mapping[str, str]) -> str | None:
        found = _UUID.findall(next(iter(links.values())))
        return found[-1] if found else None

    def owner_ref(
        self, category: Category, links: Mapping[str, str]
    ) -> tuple[Category, str] | None:
        return None

    # client
    name = "fhir"

    def supports(self, category: Category) -> bool:
        return True

    def fetch(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        if self.down:
            raise ConnectionFailed("parent down")
        self.fetches += 1
        out = FetchResult()
        for ref in refs:
            body = self.bodies.get(ref.uuid)
            if body is None:
                out.absent.add(ref.uuid)
            else:
                out.found[ref.uuid] = body
        return out

    def send(self, category: Category, changes: Sequence[OutgoingChange]) -> SendResult:
        raise NotImplementedError

    def close(self) -> None:
        pass


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def make_ctx(db: Database, parent: FakeParent, events: list[RunEvent], **kw: Any) -> PullContext:
    local = StoreLocalSide(db, "child", AuditPolicy(True, True))
    return PullContext(
        local=local,
        feed=parent,
        transport=parent,
        filters=FilterChain("child"),
        policy=RetryPolicy(base_delay=10, max_attempts=2, jitter=0),
        parent_url=PARENT,
        local_url="http://child:1",
        enabled=frozenset({"patient", "encounter", "visit"}),
        listener=events.append,
        clock=kw.pop("clock", Clock()),
        **kw,
    )


def held(db: Database, category: str) -> dict[str, tuple[str, str]]:
    from sqlalchemy import select

    from fhirsync.store.tables import records

    with db.read() as conn:
        rows = conn.execute(select(records).where(records.c.category == category))
        return {r.uuid: (r.state, r.content_hash) for r in rows}


def test_every_action_collapsed_and_paged(db: Database) -> None:
    parent, events = FakeParent(), []
    for n in range(1, 8):
        parent.bodies[uid(n)] = patient(n)
        parent.event("patient", n, "CREATED")
    parent.event("patient", 1, "UPDATED")
    parent.bodies[uid(1)] = patient(1, "Changed")
    parent.event("patient", 2, "VOIDED")
    parent.event("patient", 3, "VOIDED")
    parent.event("patient", 3, "UNVOIDED")
    parent.event("patient", 4, "CREATED")  # the same event twice
    parent.event("patient", 9, "CREATED")  # gone at the parent since: skipped, not failed
    parent.event("patient", 10, "VOIDED")  # never held here: skipped
    ctx = make_ctx(db, parent, events)
    totals = pull_category(ctx, "patient", None)
    assert (totals.read, totals.failed) == (14, 0)
    got = held(db, "patient")
    assert set(got) == {uid(n) for n in range(1, 8)}
    assert got[uid(2)][0] == "voided" and got[uid(3)][0] == "active"
    assert ctx.local.marker(marker_key(ctx, "patient")).last_entry_id == "tag:14"
    # Nothing new: a second run reads nothing and writes nothing.
    assert pull_category(ctx, "patient", None).read == 0


def test_parent_down_keeps_the_marker_and_resumes(db: Database) -> None:
    parent, events = FakeParent(page_size=2), []
    for n in range(1, 6):
        parent.bodies[uid(n)] = patient(n)
        parent.event("patient", n, "CREATED")
    ctx = make_ctx(db, parent, events)
    original = parent.fetch
    calls = {"n": 0}

    def flaky(category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionFailed("reset")
        return original(category, refs)

    parent.fetch = flaky  # type: ignore[method-assign]
    with pytest.raises(ConnectionFailed):
        pull_category(ctx, "patient", None)
    assert ctx.local.marker(marker_key(ctx, "patient")).last_entry_id == "tag:2"
    assert len(held(db, "patient")) == 2
    pull_category(ctx, "patient", None)
    assert len(held(db, "patient")) == 5


def test_invalid_record_retried_then_parked_then_fixed(db: Database) -> None:
    parent, events = FakeParent(), []
    clock = Clock()
    parent.bodies[uid(1)] = {**patient(1), "gender": "femme"}
    parent.bodies[uid(2)] = patient(2)
    parent.event("patient", 1, "CREATED")
    parent.event("patient", 2, "CREATED")
    ctx = make_ctx(db, parent, events, clock=clock)
    assert pull_category(ctx, "patient", None).failed == 1
    assert set(held(db, "patient")) == {uid(2)}  # the feed moved on
    with db.read() as conn:
        [f] = failures.list_open(conn, "pull")
    assert (f.status, f.attempts, f.error_class) == ("retrying", 1, "InvalidResource")
    clock.now += timedelta(seconds=60)
    pull_category(ctx, "patient", None)
    with db.read() as conn:
        [f] = failures.list_open(conn, "pull")
    assert (f.status, f.attempts) == ("parked", 2)
    assert [e.status for e in events if isinstance(e, RecordFailed)] == ["retrying", "parked"]
    parent.bodies[uid(1)] = patient(1)
    with db.write() as conn:
        failures.requeue(conn, [f.id])
    pull_category(ctx, "patient", None)
    assert set(held(db, "patient")) == {uid(1), uid(2)}
    with db.read() as conn:
        assert failures.list_open(conn, "pull") == []


def test_dependants_wait_for_a_parked_patient(db: Database) -> None:
    parent, events = FakeParent(), []
    parent.bodies[uid(1)] = {**patient(1), "gender": "femme"}
    parent.bodies[uid(50)] = encounter(50, subject=1)
    parent.event("patient", 1, "CREATED")
    parent.event("encounter", 50, "CREATED")
    ctx = make_ctx(db, parent, events)
    ctx.policy = RetryPolicy(max_attempts=1)
    pull_category(ctx, "patient", None)
    pull_category(ctx, "encounter", None)
    with db.read() as conn:
        got = {(f.category, f.status) for f in failures.list_open(conn, "pull")}
    assert got == {("patient", "parked"), ("encounter", "waiting")}
    parent.bodies[uid(1)] = patient(1)
    with db.write() as conn:
        failures.requeue(conn)
    pull_category(ctx, "patient", None)
    pull_category(ctx, "encounter", None)
    assert set(held(db, "encounter")) == {uid(50)}
    with db.read() as conn:
        assert failures.list_open(conn, "pull") == []


def test_own_origin_skipped_and_continue_on_failure_off(db: Database) -> None:
    parent, events = FakeParent(page_size=10), []
    for n in (1, 2, 3):
        parent.bodies[uid(n)] = patient(n)
    parent.bodies[uid(2)] = {**patient(2), "gender": "femme"}
    parent.event("patient", 1, "CREATED", origin="child")
    parent.event("patient", 2, "CREATED")
    parent.event("patient", 3, "CREATED")
    ctx = make_ctx(db, parent, events, continue_on_failure=False)
    pull_category(ctx, "patient", None)
    assert held(db, "patient") == {}
    assert ctx.local.marker(marker_key(ctx, "patient")).last_entry_id == "tag:1"
    parent.bodies[uid(2)] = patient(2)
    pull_category(ctx, "patient", None)
    assert set(held(db, "patient")) == {uid(2), uid(3)}


def test_decisions_see_the_previous_page_committed(db: Database) -> None:
    """Pages are committed on a background thread while the next one is fetched: a void on page 2
    of a record created on page 1, and an update right after, still see page 1's commit."""
    parent, events = FakeParent(page_size=1), []
    parent.bodies[uid(1)] = patient(1, "First")
    parent.event("patient", 1, "CREATED")
    parent.event("patient", 1, "VOIDED")
    parent.event("patient", 1, "UNVOIDED")
    parent.event("patient", 2, "CREATED")
    parent.bodies[uid(2)] = patient(2)
    parent.event("patient", 2, "VOIDED")
    ctx = make_ctx(db, parent, events)
    assert pull_category(ctx, "patient", None).failed == 0
    got = held(db, "patient")
    assert (got[uid(1)][0], got[uid(2)][0]) == ("active", "voided")
    assert ctx.local.marker(marker_key(ctx, "patient")).last_entry_id == "tag:5"


def test_a_failed_commit_stops_the_category_and_keeps_the_marker(db: Database) -> None:
    """The commit of page 2 fails (say, the disk is full): the error reaches the caller, page 1
    stays committed, the marker stays after page 1, and the next run applies the rest once."""
    parent, events = FakeParent(page_size=2), []
    for n in range(1, 7):
        parent.bodies[uid(n)] = patient(n)
        parent.event("patient", n, "CREATED")
    ctx = make_ctx(db, parent, events)
    local = ctx.local
    assert isinstance(local, StoreLocalSide)
    original = local.commit
    calls = {"n": 0}

    def failing(batch: Any, *, now: datetime) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return original(batch, now=now)

    local.commit = failing  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        pull_category(ctx, "patient", None)
    assert set(held(db, "patient")) == {uid(1), uid(2)}
    assert local.marker(marker_key(ctx, "patient")).last_entry_id == "tag:2"
    local.commit = original  # type: ignore[method-assign]
    assert pull_category(ctx, "patient", None).applied == 4
    assert set(held(db, "patient")) == {uid(n) for n in range(1, 7)}


def test_progress_counts_each_category_on_its_own(db: Database) -> None:
    """The runner passes one Totals through every category; RunProgress still counts per
    category (the progress bar sums the categories' latest counts)."""
    from fhirsync.sync.pull_context import Totals
    from fhirsync.sync.status import RunProgress

    parent, events = FakeParent(page_size=10), []
    for n in (1, 2, 3):
        parent.bodies[uid(n)] = patient(n)
        parent.event("patient", n, "CREATED")
    parent.bodies[uid(50)] = encounter(50, subject=1)
    parent.event("encounter", 50, "CREATED")
    ctx = make_ctx(db, parent, events)
    run = Totals()
    pull_category(ctx, "patient", None, run)
    pull_category(ctx, "encounter", None, run)
    last = {e.category: e for e in events if isinstance(e, RunProgress)}
    assert (last["patient"].done, last["patient"].applied) == (3, 3)
    assert (last["encounter"].done, last["encounter"].applied) == (1, 1)
    assert (run.read, run.applied) == (4, 4)


@pytest.mark.postgres
def test_an_origin_beyond_the_store_is_reported_and_the_page_applies(db: Database) -> None:
    parent, events = FakeParent(), []
    for n in range(1, 4):
        parent.bodies[uid(n)] = patient(n)
    parent.event("patient", 1, "CREATED")
    parent.event("patient", 2, "CREATED", origin="o" * 256)  # PostgreSQL refused the page
    parent.event("patient", 3, "CREATED")
    ctx = make_ctx(db, parent, events)
    totals = pull_category(ctx, "patient", None)
    assert (totals.read, totals.applied, totals.failed) == (3, 2, 1)
    assert set(held(db, "patient")) == {uid(1), uid(3)}
    assert ctx.local.marker(marker_key(ctx, "patient")).last_entry_id == "tag:3"


def test_records_waiting_for_a_parked_patient_are_not_fetched_again_every_run(
    db: Database,
) -> None:
    # Every run retried every waiting record: one fetch from the parent each, only to find the
    # patient still missing. A parked patient with a few thousand encounters (or a patient feed
    # stopped at a broken page) made each scheduled pull fetch them all again.
    parent, events = FakeParent(page_size=50), []
    parent.bodies[uid(1)] = {**patient(1), "gender": "femme"}
    parent.event("patient", 1, "CREATED")
    for n in range(100, 130):
        parent.bodies[uid(n)] = encounter(n, subject=1)
        parent.event("encounter", n, "CREATED")
    ctx = make_ctx(db, parent, events)
    ctx.policy = RetryPolicy(max_attempts=1)
    pull_category(ctx, "patient", None)
    pull_category(ctx, "encounter", None)
    with db.read() as conn:
        assert failures.counts(conn, "pull") == {"parked": 1, "waiting": 30}
    before = parent.fetches
    for _ in range(3):
        pull_category(ctx, "patient", None)
        pull_category(ctx, "encounter", None)
    assert parent.fetches == before
    # Once the patient is here, the next run fetches and applies them.
    parent.bodies[uid(1)] = patient(1)
    with db.write() as conn:
        failures.requeue(conn)
    pull_category(ctx, "patient", None)
    pull_category(ctx, "encounter", None)
    assert set(held(db, "encounter")) == {uid(n) for n in range(100, 130)}
    with db.read() as conn:
        assert failures.list_open(conn, "pull") == []
