"""The in-process local side of the sync engine: the node's own store, never HTTP to itself.

The engine hands over a whole page at a time (:class:`PageCommit`): record writes, the marker move
that passes them, audit rows and failure rows. :meth:`StoreLocalSide.commit` applies all of it in
ONE write transaction, so a crash at any moment leaves either the whole page or none of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection

from fhirsync import canonical
from fhirsync.categories import Category
from fhirsync.records import MarkerKey, Record, RecordWrite
from fhirsync.store import agreed as agreed_repo
from fhirsync.store import audit, failures, markers, records
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store.agreed import Agreed
from fhirsync.store.audit import AuditEntry, AuditPolicy
from fhirsync.store.conflicts import ConflictNote
from fhirsync.store.engine import Database
from fhirsync.store.failures import Failure, FailureNote
from fhirsync.store.markers import Marker


@dataclass(frozen=True, slots=True)
class MarkerMove:
    """Where a marker moves when its page commits."""

    key: MarkerKey
    entry_id: str
    page: int | None


@dataclass(frozen=True, slots=True)
class PageCommit:
    """Everything one page (or one batch of retries) changes locally, committed together."""

    operation: str
    writes: Sequence[RecordWrite] = ()
    write_audit: Sequence[AuditEntry] = ()
    """One success audit per write (same index); stored only if the write changed the record or
    links an earlier failed attempt (unchanged records leave no audit, spec §5.9 step 10)."""
    audit: Sequence[AuditEntry] = ()
    """Other audit rows (failures, reader warnings), stored subject to the policy."""
    failures: Sequence[FailureNote] = ()
    resolved: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """category → record uuids whose open failures are now resolved."""
    marker: MarkerMove | None = None
    agreed: Sequence[Agreed] = ()
    """Versions this node and its parent now agree on (the bases of later merges)."""
    conflicts: Sequence[ConflictNote] = ()
    """Conflicts to open (or refresh)."""
    kept_audit: Sequence[AuditEntry] = ()
    """Audit rows kept whatever the policy (merges and conflicts are never silent)."""


class CommitHook(Protocol):
    """Rewrites a page inside its write transaction before it is applied (conflict handling)."""

    def __call__(self, conn: Connection, batch: PageCommit, now: datetime) -> PageCommit:
        """The page to apply instead of ``batch``."""
        ...


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a commit changed."""

    changed: int
    """Writes that changed a record (and appended an event)."""
    audited: int


class StoreLocalSide:
    """:class:`~fhirsync.clients.base.LocalSide` over this node's database."""

    def __init__(
        self,
        db: Database,
        instance_id: str,
        policy: AuditPolicy,
        hook: CommitHook | None = None,
    ) -> None:
        self.db = db
        self.instance_id = instance_id
        self.policy = policy
        self.hook = hook

    def read_many(self, category: Category, uuids: Sequence[str]) -> dict[str, Record]:
        """Current local records (any state) by uuid; missing uuids are left out."""
        with self.db.read() as conn:
            return records.get_many(conn, [category.name], uuids)

    def read_any(self, categories: Sequence[str], uuids: Sequence[str]) -> dict[str, Record]:
        """Local records of any of ``categories`` by uuid (for dependency checks)."""
        with self.db.read() as conn:
            return records.get_many(conn, categories, uuids)

    def marker(self, key: MarkerKey) -> Marker:
        """The committed feed position of ``key``."""
        with self.db.read() as conn:
            return markers.get(conn, key)

    def open_failures(
        self, operation: str, category: str, uuids: Sequence[str]
    ) -> dict[str, Failure]:
        """Open failures of these records by uuid."""
        with self.db.read() as conn:
            return failures.open_for(conn, operation, category, uuids)

    def due_failures(self, operation: str, category: str, now: datetime) -> list[Failure]:
        """Failures of ``category`` to retry now."""
        with self.db.read() as conn:
            return failures.due(conn, operation, category, now=now)

    def dismissed(self, operation: str, category: str, entries: Mapping[str, str]) -> set[str]:
        """The records among ``entries`` (uuid → entry id) whose failure for that very event an
        administrator dismissed."""
        with self.db.read() as conn:
            return failures.dismissed_for(conn, operation, category, entries)

    def commit(self, batch: PageCommit, *, now: datetime) -> CommitResult:
        """Apply ``batch`` in one transaction: records (+ events), failures, audit, marker."""
        with self.db.write() as conn, canonical.hashes_remembered():
            if self.hook is not None:
                batch = self.hook(conn, batch, now)
            results = records.write_many(conn, batch.writes, now=now) if batch.writes else []
            rows: list[AuditEntry] = []
            changed = 0
            for result, entry in zip(results, batch.write_audit, strict=False):
                if result.event is not None:
                    changed += 1
                    rows.append(entry)
                elif entry.previous_uuid:
                    rows.append(replace(entry, details=entry.details + " (unchanged)"))
            rows.extend(batch.audit)
            for category, uuids in batch.resolved.items():
                if uuids:
                    failures.resolve(conn, batch.operation, category, uuids)
            if batch.failures:
                failures.record(conn, batch.failures, now=now)
            stored = audit.insert_many(conn, rows, self.policy, now=now)
            _sync_state(conn, batch, now)
            if batch.marker is not None:
                move = batch.marker
                markers.advance(conn, move.key, move.entry_id, move.page)
        return CommitResult(changed=changed, audited=len(stored))


_KEEP_ALL = AuditPolicy(persist_success=True, persist_failure=True)


def _sync_state(conn: Connection, batch: PageCommit, now: datetime) -> None:
    """The page's agreed versions, conflicts and always-kept audit rows (same transaction)."""
    if batch.agreed:
        agreed_repo.upsert_many(conn, batch.agreed, now=now)
        if batch.operation == "pull":
            _close_settled_pushes(conn, batch.agreed)
    if batch.conflicts:
        conflict_repo.record_many(conn, batch.conflicts, now=now)
    if batch.kept_audit:
        audit.insert_many(conn, batch.kept_audit, _KEEP_ALL, now=now)


def _close_settled_pushes(conn: Connection, rows: Sequence[Agreed]) -> None:
    """Resolve the open push failures of records a pull left as the parent holds them.

    A change the parent refused stayed open (parked for good, keeping ``fhirsync status`` at 1)
    once the parent's own version replaced it here: there is nothing left to send.
    """
    by_category: dict[str, dict[str, Agreed]] = {}
    for row in rows:
        if not row.pending_push:
            by_category.setdefault(row.category, {})[row.uuid] = row
    for category, agreed_rows in by_category.items():
        stale = failures.open_for(conn, "push", category, agreed_rows)
        if not stale:
            continue
        held = records.get_many(conn, [category], stale)
        settled = [
            uuid
            for uuid, rec in held.items()
            if (rec.content_hash, rec.state)
            == (agreed_rows[uuid].content_hash, agreed_rows[uuid].state)
        ]
        if settled:
            failures.resolve(conn, "push", category, settled)
