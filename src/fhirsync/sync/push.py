"""Pushing one category to the parent: read own events, drop echoes, send current copies, commit.

The mirror image of ``sync/pull.py`` (spec §5.10), with the same rules:

- the node's own event log is read straight from the store (``store/outbox.py``), a batch of
  ``batch_size`` events at a time, from a push marker per (parent, category);
- repeated events of one record collapse; a record whose newest event came from the parent is not
  sent back up (no echo); local edits and this node's children's changes are relayed;
- each record's ORIGIN travels with it, so the parent (and every node after it) keeps the node the
  change began on, and pull on that node later skips it;
- the current local copy is sent through the client facade in one request per batch and client;
- a transient error (parent down) escapes before the commit: the marker stays and the next run
  sends the batch again. Sending is idempotent (upserts keyed by uuid; the parent's store ignores
  an unchanged write), so a resend after a crash applies nothing twice;
- a record the parent rejects is retried with backoff, then parked, and with
  ``continue_on_failure`` the log moves on; failures, audit rows and the marker move commit in one
  local transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from fhirsync import categories as cats
from fhirsync.categories import Category
from fhirsync.clients.base import LocalSide, OutgoingChange, SendResult
from fhirsync.errors import RecordError, RecordNotFound, RemoteRejected
from fhirsync.records import Action, MarkerKey, Record, RecordWrite
from fhirsync.service import rest as rest_service
from fhirsync.store import agreed as agreed_repo
from fhirsync.store.agreed import Agreed
from fhirsync.store.audit import AuditEntry
from fhirsync.store.conflicts import ConflictNote
from fhirsync.store.failures import Failure, FailureNote
from fhirsync.store.local import MarkerMove, PageCommit
from fhirsync.store.outbox import OutboxBatch
from fhirsync.sync.committer import PageCommitter
from fhirsync.sync.reconcile import Reconciler, Remote, audit_for, decide
from fhirsync.sync.retry import Decision, RetryPolicy
from fhirsync.sync.status import CategoryStopped, Listener, RecordFailed, RunProgress

OPERATION = "push"
PUSH_FEED_PREFIX = "push:"
_STATE_ACTIONS: Mapping[str, Action] = {
    "voided": "VOIDED",
    "retired": "RETIRED",
    "deleted": "DELETED",
}


class OutboxSide(LocalSide, Protocol):
    """The local side with the push reads (``store.outbox.StoreOutboxSide``)."""

    def outbox_head(self, category: Category) -> int:
        """The newest event sequence number of ``category``."""
        ...

    def read_outbox(self, category: Category, after_seq: int, limit: int) -> OutboxBatch:
        """The next batch of ``category`` to push after ``after_seq``."""
        ...

    def sync_state(
        self, category: Category, uuids: Sequence[str]
    ) -> tuple[dict[str, Agreed], set[str]]:
        """Agreed versions of these records, and the uuids held back by an open conflict."""
        ...

    def pending_pushes(self, category: Category) -> list[str]:
        """Records to send though no new event asks for it."""
        ...


Fetcher = Callable[[Category, Sequence[str]], dict[str, Remote | None]]
"""Reads the parent's current copies (None: the parent no longer serves the record)."""


class Sender(Protocol):
    """Sends one batch of one category to the parent, stamped with the changes' first origin
    (``clients.push_http.HttpPushSender``)."""

    def send(
        self,
        category: Category,
        changes: Sequence[OutgoingChange],
        *,
        origin: str,
        preferred: str | None = None,
    ) -> SendResult:
        """Write ``changes``; TransientError if the parent is unreachable, per-uuid failures."""
        ...


@dataclass
class PushContext:
    """Everything a push to one parent needs; built by the push run."""

    local: OutboxSide
    transport: Sender
    policy: RetryPolicy
    parent_url: str
    local_url: str
    continue_on_failure: bool = True
    batch_size: int = 500
    listener: Listener = field(default=lambda _e: None)
    clock: Callable[[], datetime] = field(default=datetime.now)
    reconciler: Reconciler | None = None
    """Conflict handling (base versions, If-Match, 412 → merge); None sends without a base."""
    fetch: Fetcher | None = None


@dataclass
class Totals:
    """Counts of one category's push."""

    read: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    """Events not sent: echoes of pulled changes, and older events of a record sent once."""


@dataclass(frozen=True, slots=True)
class _Item:
    """One record to send, with the event that asked for it."""

    uuid: str
    entry_id: str
    seq: int
    record: Record | None


def marker_key(ctx: PushContext, category: str) -> MarkerKey:
    """The push marker of ``category`` towards this parent.

    Its position is the sequence number of the last event pushed (kept in the marker's page column,
    with the event's entry id). The filter hash covers the node's instance id and the echo rule,
    so a renamed node or a changed rule starts from the beginning again.
    """
    raw = f"{ctx.local.instance_id}|no-echo:parent|v1"
    digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
    return MarkerKey(PUSH_FEED_PREFIX + ctx.parent_url.rstrip("/"), category, digest)


def pending(ctx: PushContext, category: Category) -> int:
    """Events of ``category`` after the push marker (what a push would read)."""
    marker = ctx.local.marker(marker_key(ctx, category.name))
    return max(0, ctx.local.outbox_head(category) - (marker.last_page or 0))


def push_category(ctx: PushContext, category: Category, preferred: str | None) -> Totals:
    """Retry due failures of ``category``, then push its events from the marker to the end."""
    totals = Totals()
    retried = _retry_due(ctx, category, preferred, totals)
    retried |= _send_pending(ctx, category, preferred, totals)
    key = marker_key(ctx, category.name)
    after = ctx.local.marker(key).last_page or 0
    total = ctx.local.outbox_head(category) - after
    committer = PageCommitter(ctx.local)
    try:
        return _push_feed(
            ctx,
            category,
            preferred,
            totals,
            committer,
            key=key,
            after=after,
            total=total,
            retried=frozenset(retried),
        )
    finally:
        committer.close()


def _push_feed(
    ctx: PushContext,
    category: Category,
    preferred: str | None,
    totals: Totals,
    committer: PageCommitter,
    *,
    key: MarkerKey,
    after: int,
    total: int,
    retried: frozenset[str] = frozenset(),
) -> Totals:
    """Push the category's own feed from ``after`` in batches; batch N commits on the committer's
    thread while batch N+1 is read and sent (it waits when it names a record batch N changes)."""
    done = 0
    while True:
        batch = ctx.local.read_outbox(category, after, ctx.batch_size)
        pending_may_change = committer.touches(i.event.record_uuid for i in batch.items)
        if batch.last_event is None or pending_may_change:
            # The pending page changes some of these records, or may append events (merged
            # records): read again once it is committed.
            committer.wait()
            batch = ctx.local.read_outbox(category, after, ctx.batch_size)
        if batch.last_event is None:
            break
        done += batch.events_read
        totals.read += batch.events_read
        totals.skipped += batch.events_read - len(batch.items)
        items = [
            _Item(i.event.record_uuid, i.event.entry_id, i.event.seq, i.record)
            for i in batch.items
            if i.event.record_uuid not in retried
        ]
        move = MarkerMove(key, batch.last_event.entry_id, batch.last_seq)
        stop = _push_items(
            ctx, category, preferred, items, move=move, totals=totals, committer=committer
        )
        ctx.listener(
            RunProgress(
                OPERATION, category.name, done, max(total, done), totals.sent, totals.failed
            )
        )
        if stop:
            ctx.listener(
                CategoryStopped(
                    OPERATION, category.name, "RecordError", "continue_on_failure is off"
                )
            )
            break
        after = batch.last_seq
    return totals


def _retry_due(
    ctx: PushContext, category: Category, preferred: str | None, totals: Totals
) -> set[str]:
    """Send again the records of ``category`` whose retry is due; returns their uuids."""
    due = ctx.local.due_failures(OPERATION, category.name, ctx.clock())
    if not due:
        return set()
    current = ctx.local.read_many(category, [f.record_uuid for f in due])
    items = [_Item(f.record_uuid, f.entry_id, 0, current.get(f.record_uuid)) for f in due]
    _push_items(ctx, category, preferred, items, move=None, totals=totals, retrying=True)
    return {f.record_uuid for f in due}


def _send_pending(
    ctx: PushContext, category: Category, preferred: str | None, totals: Totals
) -> set[str]:
    """Send the records a merge or resolution left to push (their content made no new event)."""
    if ctx.reconciler is None:
        return set()
    uuids = ctx.local.pending_pushes(category)
    if not uuids:
        return set()
    current = ctx.local.read_many(category, uuids)
    items = [_Item(u, f"pending:{u}", 0, current.get(u)) for u in uuids]
    _push_items(ctx, category, preferred, items, move=None, totals=totals, retrying=True)
    return set(uuids)


def _push_items(
    ctx: PushContext,
    category: Category,
    preferred: str | None,
    items: Sequence[_Item],
    *,
    move: MarkerMove | None,
    totals: Totals,
    retrying: bool = False,
    committer: PageCommitter | None = None,
) -> bool:
    """Send ``items`` and commit the outcome with ``move`` (on ``committer``'s thread when
    given, else now); True when the category must stop."""
    bases: dict[str, Agreed] = {}
    if ctx.reconciler is not None:
        bases, held = ctx.local.sync_state(category, [i.uuid for i in items])
        # An open conflict keeps both versions where they are until a person resolves it.
        totals.skipped += sum(1 for i in items if i.uuid in held)
        items = [i for i in items if i.uuid not in held]
    failures = ctx.local.open_failures(OPERATION, category.name, [i.uuid for i in items])
    errors: dict[str, RecordError] = {}
    by_origin: dict[str, list[tuple[_Item, OutgoingChange]]] = {}
    # Each record body is parsed once, for the change sent and for its agreed row.
    bodies: dict[str, Mapping[str, Any]] = {}
    for item in items:
        if item.record is None:
            errors[item.uuid] = RecordNotFound(
                "the record is no longer in the local store", category=category.name, uuid=item.uuid
            )
            continue
        base = bases.get(item.uuid)
        if ctx.reconciler is not None and _edited_then_voided(item.record, base):
            base = _send_body_first(ctx, category, preferred, item.record, base, errors)
            if item.uuid in errors:
                continue
        change = _outgoing(item.record, base)
        if change.body is not None:
            bodies[item.uuid] = change.body
        by_origin.setdefault(item.record.origin, []).append((item, change))
    sent: set[str] = set()
    versions: dict[str, str] = {}
    for origin, group in by_origin.items():
        result = _send(ctx, category, preferred, origin, [change for _, change in group])
        sent |= result.sent
        errors.update(result.failed)
        versions.update(result.versions)
    stale = _stale(ctx, category, items, errors, bases)
    agreed = [
        agreed_repo.of_body(
            category.name,
            i.uuid,
            bodies.get(i.uuid) or i.record.resource(),
            i.record.state,
            versions.get(i.uuid),
        )
        for i in items
        if i.uuid in sent and i.record is not None
    ]
    stale.agreed[:0] = agreed
    for item in items:
        if item.uuid not in sent and item.uuid not in errors:
            errors[item.uuid] = RecordError(
                "the parent did not acknowledge this record", category=category.name, uuid=item.uuid
            )
    if errors and not ctx.continue_on_failure and move is not None and not retrying:
        first_bad = min(i.seq for i in items if i.uuid in errors)
        # Keep the marker just before the first failure: the next run sends from there again.
        before = [i for i in items if i.seq < first_bad]
        move = MarkerMove(move.key, before[-1].entry_id, first_bad - 1) if before else None
        _commit(
            ctx,
            category,
            items,
            sent=sent,
            errors=errors,
            failures=failures,
            move=move,
            totals=totals,
            stale=stale,
            committer=committer,
        )
        return True
    _commit(
        ctx,
        category,
        items,
        sent=sent,
        errors=errors,
        failures=failures,
        move=move,
        totals=totals,
        stale=stale,
        committer=committer,
    )
    return False


@dataclass
class _Stale:
    """What the parent's 412 answers turned into: merges, agreements and conflicts."""

    handled: set[str] = field(default_factory=set)
    writes: list[RecordWrite] = field(default_factory=list)
    agreed: list[Agreed] = field(default_factory=list)
    conflicts: list[ConflictNote] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)


def _stale(
    ctx: PushContext,
    category: Category,
    items: Sequence[_Item],
    errors: dict[str, RecordError],
    bases: Mapping[str, Agreed],
) -> _Stale:
    """Records the parent refused as stale (412): fetch its copy and decide like a pull.

    A 412 means the parent changed the record since the base this node sent: it is a conflict to
    merge (or store), never a failure to retry. The uuids handled are removed from ``errors``.
    """
    out = _Stale()
    stale = [
        uuid for uuid, e in errors.items() if isinstance(e, RemoteRejected) and e.status == 412
    ]
    if not stale or ctx.reconciler is None or ctx.fetch is None:
        return out
    remotes = ctx.fetch(category, stale)
    records = {i.uuid: i.record for i in items}
    now = ctx.clock()
    for uuid in stale:
        local = records.get(uuid)
        base = bases.get(uuid)
        remote = remotes.get(uuid)
        if uuid not in remotes or local is None:
            continue
        if remote is None:
            # The parent no longer serves it: voided/retired/deleted there since the base.
            body = base.resource() if base is not None else local.resource()
            remote = Remote(body, category.delete_state)
        decision = decide(
            local,
            base,
            remote,
            category=category.name,
            uuid=uuid,
            policy=ctx.reconciler.policy(category.name),
            instance_id=ctx.local.instance_id,
            operation="PUSH",
            now=now,
        )
        del errors[uuid]
        out.handled.add(uuid)
        if decision.kind == "keep-local" and decision.agreed is not None:
            # The parent holds the base content under a newer version: send local again.
            decision = replace(decision, agreed=replace(decision.agreed, pending_push=True))
        if decision.write is not None:
            out.writes.append(decision.write)
        if decision.agreed is not None:
            out.agreed.append(decision.agreed)
        if decision.conflict is not None:
            out.conflicts.append(decision.conflict)
        row = audit_for(decision, _audit(ctx, category, _Item(uuid, "", 0, local), None, None))
        if row is not None:
            out.audit.append(row)
    return out


def _edited_then_voided(record: Record, base: Agreed | None) -> bool:
    """True for a voided/retired record whose content the parent has not seen: a void carries
    no body, so the content goes up first (else the parent voids its older body). A record the
    parent never had stays off it (spec §5.10), as pull skips a void of a record it never had."""
    if record.state not in ("voided", "retired") or base is None:
        return False
    return base.content_hash != record.content_hash


def _send_body_first(
    ctx: PushContext,
    category: Category,
    preferred: str | None,
    record: Record,
    base: Agreed | None,
    errors: dict[str, RecordError],
) -> Agreed | None:
    """Send ``record``'s content as an active update (If-Match the base), then return the base
    its void must name; a refusal (412 included) goes to ``errors`` like any send."""
    update = OutgoingChange(
        category=record.category,
        uuid=record.uuid,
        action="UPDATED",
        body=record.resource(),
        state="active",
        base_version=_base_tag(category, base),
    )
    result = _send(ctx, category, preferred, record.origin, [update])
    if record.uuid not in result.sent:
        errors[record.uuid] = result.failed.get(record.uuid) or RecordError(
            "the parent did not acknowledge this record", category=category.name, uuid=record.uuid
        )
        return base
    return agreed_repo.of_body(
        category.name, record.uuid, record.resource(), "active", result.versions.get(record.uuid)
    )


def _send(
    ctx: PushContext,
    category: Category,
    preferred: str | None,
    origin: str,
    changes: Sequence[OutgoingChange],
) -> SendResult:
    """One request per batch (of one origin), in slices of ``batch_size``."""
    result = SendResult()
    for start in range(0, len(changes), ctx.batch_size):
        part = ctx.transport.send(
            category, changes[start : start + ctx.batch_size], origin=origin, preferred=preferred
        )
        result.sent |= part.sent
        result.failed.update(part.failed)
        result.versions.update(part.versions)
    return result


def _outgoing(record: Record, base: Agreed | None = None) -> OutgoingChange:
    """The record's current state as a change for the parent, with the base it started from."""
    action: Action = _STATE_ACTIONS.get(record.state, "UPDATED")
    return OutgoingChange(
        category=record.category,
        uuid=record.uuid,
        action=action,
        body=record.resource(),
        state=record.state,
        base_version=_base_tag(cats.get(record.category), base),
    )


def _base_tag(category: Category, base: Agreed | None) -> str | None:
    """What ``If-Match`` names: the parent's version when known, else, for a REST category
    (whose representations carry no version), the entity tag of the agreed content and state."""
    if base is None:
        return None
    if base.parent_version is not None or category.is_fhir:
        return base.parent_version
    return rest_service.entity_tag(base.content_hash, base.state)


def _commit(
    ctx: PushContext,
    category: Category,
    items: Sequence[_Item],
    *,
    sent: set[str],
    errors: Mapping[str, RecordError],
    failures: Mapping[str, Failure],
    move: MarkerMove | None,
    totals: Totals,
    stale: _Stale | None = None,
    committer: PageCommitter | None = None,
) -> None:
    now = ctx.clock()
    stale = stale or _Stale()
    audit: list[AuditEntry] = []
    notes: list[FailureNote] = []
    for item in items:
        previous = failures.get(item.uuid)
        if item.uuid in stale.handled:
            continue
        if item.uuid in sent:
            audit.append(_audit(ctx, category, item, None, previous))
            totals.sent += 1
            continue
        error = errors[item.uuid]
        entry = _audit(ctx, category, item, error, previous)
        audit.append(entry)
        notes.append(
            _note(
                ctx,
                category,
                item,
                error,
                previous=previous,
                audit_uuid=entry.uuid,
                move=move,
                now=now,
            )
        )
        totals.failed += 1
    resolved = {category.name: sorted(sent & set(failures))} if sent & set(failures) else {}
    page = PageCommit(
        OPERATION,
        writes=stale.writes,
        audit=audit,
        failures=notes,
        resolved=resolved,
        marker=move,
        agreed=stale.agreed,
        conflicts=stale.conflicts,
        kept_audit=stale.audit,
    )
    if committer is None:
        ctx.local.commit(page, now=now)
    else:
        committer.submit(page, now, (item.uuid for item in items))


def _note(
    ctx: PushContext,
    category: Category,
    item: _Item,
    error: RecordError,
    *,
    previous: Failure | None,
    audit_uuid: str,
    move: MarkerMove | None,
    now: datetime,
) -> FailureNote:
    attempt = (previous.attempts if previous else 0) + 1
    decision = ctx.policy.decide(error, attempt)
    status = "retrying" if decision in (Decision.RETRY, Decision.WAIT) else "parked"
    ctx.listener(
        RecordFailed(OPERATION, category.name, item.uuid, type(error).__name__, attempt, status)
    )
    key = move.key.key if move else (previous.marker_key if previous else "")
    return FailureNote(
        operation=OPERATION,
        marker_key=key,
        category=category.name,
        record_uuid=item.uuid,
        entry_id=item.entry_id,
        action=_action_of(item),
        links=category.links(item.uuid),
        error_class=type(error).__name__,
        error_message=_details(error),
        status=status,  # type: ignore[arg-type]
        attempts=attempt,
        next_retry_at=ctx.policy.next_try(attempt, now) if status == "retrying" else None,
        audit_uuid=audit_uuid,
    )


def _action_of(item: _Item) -> str:
    if item.record is None:
        return "UPDATED"
    return _STATE_ACTIONS.get(item.record.state, "UPDATED")


def _details(error: RecordError) -> str:
    """The error without record bodies (no patient data)."""
    where = f" at {error.element}" if error.element else ""
    detail = f" ({error.detail[:500]})" if error.detail else ""
    return f"{type(error).__name__}: {error.message}{where}{detail}"


def _audit(
    ctx: PushContext,
    category: Category,
    item: _Item,
    error: RecordError | None,
    previous: Failure | None,
) -> AuditEntry:
    links = category.links(item.uuid)
    client = "fhir" if "fhir" in links else next(iter(links), None)
    return AuditEntry(
        success=error is None,
        resource_name=category.name,
        record_uuid=item.uuid,
        action=_action_of(item),
        operation="PUSH",
        details="Success" if error is None else _details(error),
        link_type=client,
        used_resource_url=f"{ctx.parent_url}{links[client]}" if client else None,
        available_resource_urls=links,
        parent_url=ctx.parent_url,
        local_url=ctx.local_url,
        creator_instance_id=ctx.local.instance_id,
        error_class=type(error).__name__ if error else None,
        timestamp=ctx.clock(),
        previous_uuid=previous.audit_uuid if previous else None,
    ).with_uuid()


def push_categories(
    ctx: PushContext, categories: Sequence[tuple[str, str | None]]
) -> dict[str, Totals]:
    """Push each (category, preferred client) in order; unknown categories are skipped."""
    out: dict[str, Totals] = {}
    for name, preferred in categories:
        category = cats.find(name)
        if category is None or category.is_subresource:
            # Sub-resources travel inside their owner's body (person_name with the person).
            continue
        out[name] = push_category(ctx, category, preferred)
    return out
