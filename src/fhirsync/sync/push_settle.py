"""Settling a pushed batch: the parent's answer turned into the page to commit.

Sent records get their agreed version (the base of later merges, with the parent's version from
its ETag) and a success audit row; refused ones a failure to retry or park (``RetryPolicy``); a
412 (the parent changed the record since the base sent) is fetched and decided like a pull: a
merge, an agreement or a conflict, never a failure. The parent's copy goes into the page as a
pulled write, decided by the push's commit hook (``Reconciler.pushed``) inside the commit's
transaction, against the local record as it is then: it may have changed while the batch was in
flight. With ``continue_on_failure`` off the marker stops just before the first failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fhirsync.categories import Category
from fhirsync.clients.base import SendResult
from fhirsync.errors import RecordError, RemoteRejected
from fhirsync.records import Record, RecordWrite
from fhirsync.store import agreed as agreed_repo
from fhirsync.store.agreed import Agreed
from fhirsync.store.audit import AuditEntry
from fhirsync.store.failures import MESSAGE_MAX, Failure, FailureNote
from fhirsync.store.local import MarkerMove, PageCommit
from fhirsync.sync.push_batch import STATE_ACTIONS, Item, Prepared
from fhirsync.sync.push_context import ABSENT, OPERATION, PushContext, Totals
from fhirsync.sync.reconcile import PULLED_VIA
from fhirsync.sync.retry import Decision
from fhirsync.sync.status import RecordFailed


def settle(
    ctx: PushContext,
    prepared: Prepared,
    result: SendResult,
    *,
    move: MarkerMove | None,
    totals: Totals,
    retrying: bool = False,
) -> tuple[PageCommit, bool]:
    """The page recording ``result`` (with ``move``), and whether the category must stop."""
    category, items = prepared.category, prepared.items
    errors = {**prepared.errors, **result.failed}
    sent = set(result.sent)
    stale = _stale(ctx, category, items, errors)
    agreed = [
        _agreed_of(category, i.record, result.versions.get(i.uuid))
        for i in items
        if i.uuid in sent and i.record is not None
    ]
    in_order = not ctx.continue_on_failure and move is not None and not retrying
    # A 412 is handled (its parent copy decided at commit), not a failure.
    missing = [
        i
        for i in items
        if i.uuid not in sent and i.uuid not in errors and i.uuid not in stale.handled
    ]
    unsent = _unsent(items, errors, missing) if in_order else set()
    for item in missing:
        if item.uuid not in unsent:
            errors[item.uuid] = RecordError(
                "the parent did not acknowledge this record", category=category.name, uuid=item.uuid
            )
    stop = False
    if errors and in_order and move is not None:
        first_bad = min(i.seq for i in items if i.uuid in errors)
        # Keep the marker just before the first failure: the next run sends from there again.
        before = [i for i in items if i.seq < first_bad]
        move = MarkerMove(move.key, before[-1].entry_id, first_bad - 1) if before else None
        stop = True
    page = _page(
        ctx,
        prepared,
        sent=sent,
        unsent=unsent,
        errors=errors,
        move=move,
        totals=totals,
        stale=stale,
        agreed=agreed,
    )
    return page, stop


def _unsent(
    items: Sequence[Item], errors: Mapping[str, RecordError], missing: Sequence[Item]
) -> set[str]:
    """Sent in order (``continue_on_failure`` off): the records left unsent after the first one
    that failed or was not acknowledged. No attempt, so no failure: the marker stops before them
    and a later run sends them once the record before them is fixed or dismissed."""
    stop_at = min(
        [i.seq for i in items if i.uuid in errors] + [i.seq for i in missing[:1]], default=None
    )
    if stop_at is None:
        return set()
    return {i.uuid for i in missing if i.seq > stop_at}


def _agreed_of(category: Category, record: Record, version: str | None) -> Agreed:
    """The agreed row of a record the parent now holds (unified bytes cut from the stored
    body when its hash proves the cut right, else parsed and unified)."""
    data = _unified_stored(category, record)
    if data is None:
        return agreed_repo.of_body(
            category.name, record.uuid, record.resource(), record.state, version
        )
    return Agreed(category.name, record.uuid, record.content_hash, data, record.state, version)


def _unified_stored(category: Category, record: Record) -> bytes | None:
    """The unified canonical bytes of a stored FHIR body without parsing it, or None.

    The store keeps canonical JSON (sorted keys) with ``id`` and ``meta.versionId`` /
    ``meta.lastUpdated`` stamped in; unifying removes exactly those (and a ``meta`` left empty).
    Cutting them out of the bytes gives the unified bytes, and the record's content hash (taken
    over the unified body) proves the cut: a body where it went wrong (an ``id`` elsewhere equal
    to the uuid, unusual meta) hashes differently and is unified the slow way.
    """
    if not category.is_fhir:
        return None
    raw = _cut(record.body, b'"id":"' + record.uuid.encode() + b'"', 0)
    meta = raw.find(b'"meta":{')
    if meta >= 0:
        raw = _cut(raw, b'"lastUpdated":"', meta, value=True)
        raw = _cut(raw, b'"versionId":"', meta, value=True)
        raw = _cut(raw, b'"meta":{}', meta)
    if hashlib.sha256(raw).hexdigest() != record.content_hash:
        return None
    return raw


def _cut(raw: bytes, member: bytes, start: int, *, value: bool = False) -> bytes:
    """``raw`` without the first ``member`` from ``start`` (with ``value``: the member is a key
    and the opening quote of a string value that runs to the next quote) and one comma beside
    it; ``raw`` itself if there is none."""
    at = raw.find(member, start)
    if at < 0:
        return raw
    end = at + len(member)
    if value:
        end = raw.find(b'"', end) + 1
        if end == 0:
            return raw
    if raw[end : end + 1] == b",":
        return raw[:at] + raw[end + 1 :]
    if raw[at - 1 : at] == b",":
        return raw[: at - 1] + raw[end:]
    return raw[:at] + raw[end:]


# --- 412 answers --------------------------------------------------------------------------------


@dataclass
class _Stale:
    """The parent's copies of the records it refused as stale (412), to decide at commit."""

    handled: set[str] = field(default_factory=set)
    writes: list[RecordWrite] = field(default_factory=list)
    """The parent's copies as pulled writes (``Reconciler.pushed`` decides them)."""
    audit: list[AuditEntry] = field(default_factory=list)
    """The audit row each decision's merge or conflict row is made from (same index)."""


def _stale(
    ctx: PushContext,
    category: Category,
    items: Sequence[Item],
    errors: dict[str, RecordError],
) -> _Stale:
    """Records the parent refused as stale (412): fetch its copy, to decide like a pull.

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
        remote = remotes.get(uuid, ABSENT)
        if remote is ABSENT or local is None:
            # Not read, or not held by the parent at all: not its change to decide. The send
            # sends such a record again as new (``push_batch``); left here, it is retried.
            continue
        # None: the parent no longer serves it (voided/retired/deleted there since the base); the
        # decision takes its last body to be the base's.
        body, state = (remote.body, remote.state) if remote else (None, category.delete_state)
        del errors[uuid]
        out.handled.add(uuid)
        # The parent's change, labelled as pull labels a change its feed names no origin for
        # (the parent's URL): labelled as this node's, its children were told it began here.
        out.writes.append(
            RecordWrite(category.name, uuid, body, ctx.parent_url, state, via=PULLED_VIA)
        )
        out.audit.append(_audit(ctx, category, Item(uuid, "", 0, local), None, None, now))
    return out


# --- the page -----------------------------------------------------------------------------------


def _page(
    ctx: PushContext,
    prepared: Prepared,
    *,
    sent: set[str],
    unsent: set[str],
    errors: Mapping[str, RecordError],
    move: MarkerMove | None,
    totals: Totals,
    stale: _Stale,
    agreed: list[Agreed],
) -> PageCommit:
    category, failures = prepared.category, prepared.failures
    now = ctx.clock()
    audit: list[AuditEntry] = []
    notes: list[FailureNote] = []
    for item in prepared.items:
        previous = failures.get(item.uuid)
        if item.uuid in stale.handled or item.uuid in unsent:
            continue
        if item.uuid in sent:
            # Stored with a uuid drawn in bulk at insert time (nothing links to it yet).
            audit.append(_audit(ctx, category, item, None, previous, now))
            totals.sent += 1
            continue
        error = errors[item.uuid]
        if _fails_as_before(item, error, previous, now):
            # Sent again because continue_on_failure is off and the log stopped before it; its
            # open failure says so already and waits for its retry time (or a person).
            totals.failed += 1
            continue
        entry = _audit(ctx, category, item, error, previous, now).with_uuid()
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
    return PageCommit(
        OPERATION,
        writes=stale.writes,
        write_audit=stale.audit,
        audit=audit,
        failures=notes,
        resolved=resolved,
        marker=move,
        agreed=agreed,
    )


def _fails_as_before(
    item: Item, error: RecordError, previous: Failure | None, now: datetime
) -> bool:
    """True when the event that failed is sent again before its retry is due, and fails as it
    did: not another attempt (that tried a parked record, and wrote its audit row, every run)."""
    if previous is None or previous.entry_id != item.entry_id:
        return False
    return (
        previous.awaits_retry(now)
        and previous.error_class == type(error).__name__
        and previous.error_message == error.summary(with_detail=True)[:MESSAGE_MAX]
    )


def _note(
    ctx: PushContext,
    category: Category,
    item: Item,
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
        error_message=error.summary(with_detail=True),
        status=status,  # type: ignore[arg-type]
        attempts=attempt,
        next_retry_at=ctx.policy.next_try(attempt, now) if status == "retrying" else None,
        audit_uuid=audit_uuid,
    )


def _action_of(item: Item) -> str:
    if item.record is None:
        return "UPDATED"
    return STATE_ACTIONS.get(item.record.state, "UPDATED")


def _audit(
    ctx: PushContext,
    category: Category,
    item: Item,
    error: RecordError | None,
    previous: Failure | None,
    now: datetime,
) -> AuditEntry:
    links = category.links(item.uuid)
    client = "fhir" if "fhir" in links else next(iter(links), None)
    return AuditEntry(
        success=error is None,
        resource_name=category.name,
        record_uuid=item.uuid,
        action=_action_of(item),
        operation="PUSH",
        details="Success" if error is None else error.summary(with_detail=True),
        link_type=client,
        used_resource_url=f"{ctx.parent_url}{links[client]}" if client else None,
        available_resource_urls=links,
        parent_url=ctx.parent_url,
        local_url=ctx.local_url,
        creator_instance_id=ctx.local.instance_id,
        error_class=type(error).__name__ if error else None,
        timestamp=now,
        previous_uuid=previous.audit_uuid if previous else None,
    )
