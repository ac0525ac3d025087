"""A pulled page's outcome as one local commit: writes with their audit rows, failures with theirs
(retry, wait or park, spec §7), resolved failures and the marker move."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from fhirsync.errors import DependencyMissing, RecordError
from fhirsync.records import FeedEntry, RecordWrite
from fhirsync.store.audit import AuditEntry, new_uuid
from fhirsync.store.failures import MESSAGE_MAX, Failure, FailureNote
from fhirsync.store.local import MarkerMove, PageCommit
from fhirsync.sync.apply import Change, Outcome, Skip, Write
from fhirsync.sync.pull_context import OPERATION, Plan, PullContext, Totals
from fhirsync.sync.retry import Decision
from fhirsync.sync.status import RecordFailed

_NAME_MAX = 255  # audit.resource_name


def page_commit(
    ctx: PullContext,
    plan: Plan,
    outcomes: Mapping[tuple[str, str], Outcome],
    *,
    marker: MarkerMove | None,
    extra_audit: list[AuditEntry],
    totals: Totals,
) -> PageCommit:
    """The commit of a page: writes with their audit, failures with theirs, resolved failures."""
    now = ctx.clock()
    writes: list[RecordWrite] = []
    write_audit: list[AuditEntry] = []
    audit: list[AuditEntry] = list(extra_audit)
    notes: list[FailureNote] = []
    resolved: dict[str, list[str]] = {}
    by_key = {(c.category.name, c.uuid): c for c in plan.changes}
    for key, outcome in outcomes.items():
        change = by_key[key]
        previous = plan.failures.get(key)
        if isinstance(outcome, Write):
            writes.append(outcome.write)
            write_audit.append(
                _audit(ctx, change, True, details="Success", error=None, previous=previous)
            )
            resolved.setdefault(key[0], []).append(key[1])
            totals.applied += 1
        elif isinstance(outcome, Skip):
            if previous is not None:
                resolved.setdefault(key[0], []).append(key[1])
        elif _waits_as_before(change, outcome.error, previous):
            # Its open failure already says so. An audit row and a failed record every run
            # grew the log by a row a run (every few seconds on a short schedule) and logged a
            # warning each time, for as long as the record it needs stayed away.
            continue
        elif _fails_as_before(change, outcome.error, previous, now):
            # Read again because continue_on_failure is off and the feed stopped before it; its
            # open failure says so already and waits for its retry time (or a person).
            totals.failed += 1
        else:
            entry = _audit(
                ctx,
                change,
                False,
                details=outcome.error.summary(),
                error=outcome.error,
                previous=previous,
            )
            audit.append(entry)
            notes.append(
                _note(
                    ctx,
                    change,
                    outcome.error,
                    previous,
                    audit_uuid=entry.uuid,
                    marker=marker,
                    now=now,
                )
            )
            totals.failed += 1
    for skipped, why in plan.unusable:
        audit.append(_audit_unusable(ctx, skipped, why))
        if isinstance(why, RecordError):  # a record this node misses; not a category it skips
            totals.failed += 1
    return PageCommit(OPERATION, writes, write_audit, audit, notes, resolved, marker)


def _waits_as_before(change: Change, error: RecordError, previous: Failure | None) -> bool:
    """True when the record still waits for the same record, for the same feed entry."""
    return (
        previous is not None
        and previous.status == "waiting"
        and isinstance(error, DependencyMissing)
        and previous.depends_on == error.detail
        and previous.entry_id == change.entry.entry_id
    )


def _fails_as_before(
    change: Change, error: RecordError, previous: Failure | None, now: datetime
) -> bool:
    """True when the feed entry that failed is read again before its retry is due, and fails
    as it did: not another attempt (that counted two a run, and tried a parked one each run)."""
    if previous is None or previous.entry_id != change.entry.entry_id:
        return False
    return (
        previous.awaits_retry(now)
        and previous.error_class == type(error).__name__
        and previous.error_message == error.summary()[:MESSAGE_MAX]
    )


def _note(
    ctx: PullContext,
    change: Change,
    error: RecordError,
    previous: Failure | None,
    *,
    audit_uuid: str,
    marker: MarkerMove | None,
    now: datetime,
) -> FailureNote:
    attempt = (previous.attempts if previous else 0) + 1
    decision = ctx.policy.decide(error, attempt)
    if decision is Decision.WAIT:
        status, attempt = "waiting", previous.attempts if previous else 0
    elif decision is Decision.RETRY:
        status = "retrying"
    else:
        status = "parked"
    ctx.listener(
        RecordFailed(
            OPERATION, change.category.name, change.uuid, type(error).__name__, attempt, status
        )
    )
    key = marker.key.key if marker else (previous.marker_key if previous else "")
    return FailureNote(
        operation=OPERATION,
        marker_key=key,
        category=change.category.name,
        record_uuid=change.uuid,
        entry_id=change.entry.entry_id,
        action=change.action,
        links=dict(change.entry.links),
        error_class=type(error).__name__,
        error_message=error.summary(),
        status=status,  # type: ignore[arg-type]
        attempts=attempt,
        next_retry_at=ctx.policy.next_try(attempt, now) if status == "retrying" else None,
        depends_on=error.detail if isinstance(error, DependencyMissing) else None,
        audit_uuid=audit_uuid,
        origin=change.entry.origin,
    )


def _audit(
    ctx: PullContext,
    change: Change,
    success: bool,
    *,
    details: str,
    error: RecordError | None,
    previous: Failure | None,
) -> AuditEntry:
    links = change.entry.links
    client = "fhir" if "fhir" in links else next(iter(links), None)
    link = links[client] if client else None
    if client == "fhir" and change.category.is_fhir:
        # What the fhir client reads: the category's R4 address, also when a Java feed names
        # the old STU3 module's /ws/fhir/ one (never asked, and gone from current OpenMRS).
        link = change.category.links(change.uuid)["fhir"]
    used = f"{ctx.parent_url}{link}" if link else None
    return AuditEntry(
        success=success,
        resource_name=change.category.name,
        record_uuid=change.uuid,
        action=change.action,
        operation="PULL",
        details=details,
        link_type=client,
        used_resource_url=used,
        available_resource_urls=links,
        parent_url=ctx.parent_url,
        local_url=ctx.local_url,
        creator_instance_id=ctx.local.instance_id,
        error_class=type(error).__name__ if error else None,
        timestamp=ctx.clock(),
        previous_uuid=previous.audit_uuid if previous else None,
        uuid=new_uuid(),
    )


def _audit_unusable(ctx: PullContext, entry: FeedEntry, error: Exception) -> AuditEntry:
    return AuditEntry(
        success=False,
        # The category term is the parent's (any length); the details name it in full.
        resource_name=entry.category[:_NAME_MAX],
        record_uuid=None,
        action=entry.action,
        operation="PULL",
        details=f"{type(error).__name__}: {error}",
        available_resource_urls=entry.links,
        parent_url=ctx.parent_url,
        local_url=ctx.local_url,
        creator_instance_id=ctx.local.instance_id,
        error_class=type(error).__name__,
    ).with_uuid()


def warning(ctx: PullContext, category: str, message: str) -> AuditEntry:
    """A reader recovery warning, kept in the audit log (it is not a record failure)."""
    return AuditEntry(
        success=True,
        resource_name=category,
        record_uuid=None,
        action="RECOVERED",
        operation="PULL",
        details=f"Feed marker recovered: {message}",
        parent_url=ctx.parent_url,
        local_url=ctx.local_url,
        creator_instance_id=ctx.local.instance_id,
    ).with_uuid()
