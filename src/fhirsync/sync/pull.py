"""Pulling one category from the parent: read a page, filter, collapse, fetch, apply, commit.

Each feed page becomes ONE local transaction holding its records, its audit rows, its failure rows
and the marker move past it (DESIGN §5 promise 1). A transient error (parent unreachable) escapes
before the commit, so the marker stays. Record failures are retried with backoff, wait for the
record they depend on, or are parked (promise 3); they never stop the feed unless
``continue_on_failure`` is off.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhirsync import categories as cats
from fhirsync.categories import Category
from fhirsync.clients.base import RecordRef, SourceClient
from fhirsync.clients.facade import ClientFacade
from fhirsync.errors import (
    DependencyMissing,
    FhirsyncError,
    InvalidResource,
    RecordError,
    UnknownResourceType,
)
from fhirsync.feed.reader import FeedReader
from fhirsync.records import ORIGIN_MAX, FeedEntry, MarkerKey, Record
from fhirsync.settings import NodeConfig
from fhirsync.store import children
from fhirsync.store.audit import AuditEntry, AuditPolicy
from fhirsync.store.engine import Database
from fhirsync.store.local import MarkerMove, PageCommit, StoreLocalSide
from fhirsync.sync import apply
from fhirsync.sync.apply import Change, Fail, Outcome, Write
from fhirsync.sync.checking import Checked, Pending, make_checker
from fhirsync.sync.committer import PageCommitter
from fhirsync.sync.filters import FilterChain, load_plugins
from fhirsync.sync.pull_context import OPERATION, Plan, PullContext, Totals
from fhirsync.sync.pull_echoes import after_others, in_page_order, own_echoes, replaced_since
from fhirsync.sync.pull_outcome import page_commit, warning
from fhirsync.sync.reconcile import conflict_hook
from fhirsync.sync.retry import RetryPolicy
from fhirsync.sync.status import CategoryStopped, Listener, RunProgress

_LINK_MAX = 512
"""The longest entry link pulled (an audit row keeps the parent's URL and the link, in 1024)."""


def marker_key(ctx: PullContext, category: str) -> MarkerKey:
    """The marker of ``category`` on this parent under the current filter settings."""
    return MarkerKey(ctx.parent_url.rstrip("/"), category, ctx.filters.settings_hash(category))


def pull_category(
    ctx: PullContext, category: str, preferred: str | None, totals: Totals | None = None
) -> Totals:
    """Retry due failures of ``category``, then read its feed from the marker to the end.

    Counts are added to ``totals`` (a new one if None) as each page commits.
    """
    totals = totals if totals is not None else Totals()
    # RunProgress counts this category only; ``totals`` may already hold earlier categories'.
    before = Totals(totals.read, totals.applied, totals.failed)
    _retry_due(ctx, category, preferred, totals)
    key = marker_key(ctx, category)
    marker = ctx.local.marker(key)
    chunks = ctx.feed.read(category, after_entry_id=marker.last_entry_id, page=marker.last_page)
    committer = PageCommitter(ctx.local)
    try:
        for chunk in chunks:
            if not chunk.entries:
                continue
            totals.read += len(chunk.entries)
            recovered = [warning(ctx, category, chunk.recovered)] if chunk.recovered else []
            move = MarkerMove(key, chunk.entries[-1].entry_id, chunk.page)
            stop = _apply_page(
                ctx,
                preferred,
                chunk.entries,
                move=move,
                extra_audit=recovered,
                totals=totals,
                committer=committer,
            )
            ctx.listener(
                RunProgress(
                    OPERATION,
                    category,
                    totals.read - before.read,
                    None,
                    totals.applied - before.applied,
                    totals.failed - before.failed,
                )
            )
            if stop:
                ctx.listener(
                    CategoryStopped(
                        OPERATION, category, "RecordError", "continue_on_failure is off"
                    )
                )
                break
    finally:
        # Whatever stopped the loop (a lost parent, a malformed page), the page already handed
        # over is committed (or its error raised) before the category ends.
        committer.close()
    return totals


@dataclass
class _Ready:
    """A page's parent copies, fetched and validated."""

    fetched: _Fetched
    checked: dict[tuple[str, str], Checked]


def _prepare(ctx: PullContext, changes: Sequence[Change], preferred: str | None) -> _Ready:
    """Fetch the bodies ``changes`` need and validate them (``ctx.checker``).

    Each fetched batch goes to the checker (worker processes) at once, so it is validated while
    the parent answers the next batch.
    """
    ready = _Ready({}, {})
    started: list[tuple[list[tuple[str, str]], Pending]] = []
    for fetched in _fetch_batches(ctx, [c for c in changes if c.needs_fetch], preferred):
        ready.fetched.update(fetched)
        items = [
            (cats.get(key[0]), key[1], body)
            for key, (body, error) in fetched.items()
            if body is not None and error is None
        ]
        started.append(([(c.name, u) for c, u, _b in items], ctx.checker.start(items)))
    for keys, pending in started:
        ready.checked.update(zip(keys, pending(), strict=True))
    return ready


def _fetch_last(
    ctx: PullContext, changes: Sequence[Change], preferred: str | None
) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The parent's last bodies of voided/retired records, from clients that can serve them."""
    groups: dict[tuple[str, str], tuple[Category, apply.LastBodySource, list[RecordRef]]] = {}
    for change in changes:
        client = ctx.transport.choose(change.category, change.entry.links, preferred)
        if isinstance(client, apply.LastBodySource):
            key = (change.category.name, client.name)
            group = groups.setdefault(key, (change.category, client, []))
            group[2].append(RecordRef(change.uuid, change.entry.links))
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for category, source, refs in groups.values():
        found = source.fetch_last(category, refs).found
        out.update({(category.name, uuid): body for uuid, body in found.items()})
    return out


def _apply_page(
    ctx: PullContext,
    preferred: str | None,
    entries: Sequence[FeedEntry],
    *,
    move: MarkerMove,
    extra_audit: list[AuditEntry],
    totals: Totals,
    committer: PageCommitter,
) -> bool:
    """Apply one page and commit it with the marker; True when the category must stop here."""
    accepted = [e for e in entries if ctx.filters.accepts(e)]
    echoes = own_echoes(ctx.filters, entries)
    if echoes:
        later = after_others(entries, accepted, echoes, lambda e: _target(ctx, e))
        accepted = in_page_order(entries, accepted, later)
    plan = _plan(ctx, accepted, preferred)
    _drop_dismissed(ctx, plan)
    ready = _prepare(ctx, plan.changes, preferred)  # overlaps the previous page's commit
    committer.wait()
    # Read once the pages before are committed: one of them may have replaced the local copy.
    taken = {id(e) for e in accepted}
    left_out = [e for e in echoes if id(e) not in taken]
    revived = replaced_since(
        ctx.local, ctx.filters.instance_id, left_out, lambda e: _target(ctx, e)
    )
    if revived:
        accepted = in_page_order(entries, accepted, revived)
        plan = _plan(ctx, accepted, preferred)
        _drop_dismissed(ctx, plan)
        ready = _prepare(ctx, plan.changes, preferred)
    _add_open_failures(ctx, plan)
    outcomes = _outcomes(ctx, plan, ready)
    failed_at = _first_failed_entry(entries, plan, outcomes)
    if failed_at is None or ctx.continue_on_failure:
        batch = page_commit(
            ctx, plan, outcomes, marker=move, extra_audit=extra_audit, totals=totals
        )
        committer.submit(batch, ctx.clock())
        return False
    # continue_on_failure is off: commit what precedes the failing entry, keep the marker just
    # before it (the next run reads it again), and record the failure.
    head = list(entries[:failed_at])
    taken = {id(e) for e in accepted}
    head_plan = _plan(ctx, [e for e in head if id(e) in taken], preferred)
    _drop_dismissed(ctx, head_plan)
    _add_open_failures(ctx, head_plan)
    head_outcomes = _outcomes(ctx, head_plan) if head else {}
    marker = MarkerMove(move.key, head[-1].entry_id, move.page) if head else None
    bad_id = entries[failed_at].entry_id
    bad = {
        (c.category.name, c.uuid): outcomes[(c.category.name, c.uuid)]
        for c in plan.changes
        if c.entry.entry_id == bad_id
    }
    first = page_commit(
        ctx, head_plan, head_outcomes, marker=marker, extra_audit=extra_audit, totals=totals
    )
    second = page_commit(ctx, plan, bad, marker=None, extra_audit=[], totals=totals)
    ctx.local.commit(_merge(first, second), now=ctx.clock())
    return True


def _merge(a: PageCommit, b: PageCommit) -> PageCommit:
    resolved = {
        k: [*a.resolved.get(k, ()), *b.resolved.get(k, ())] for k in {*a.resolved, *b.resolved}
    }
    return PageCommit(
        OPERATION,
        writes=[*a.writes, *b.writes],
        write_audit=[*a.write_audit, *b.write_audit],
        audit=[*a.audit, *b.audit],
        failures=[*a.failures, *b.failures],
        resolved=resolved,
        marker=a.marker,
    )


def _first_failed_entry(
    entries: Sequence[FeedEntry], plan: Plan, outcomes: Mapping[tuple[str, str], Outcome]
) -> int | None:
    bad_entries = {
        c.entry.entry_id
        for c in plan.changes
        if isinstance(outcomes.get((c.category.name, c.uuid)), Fail)
    }
    for index, entry in enumerate(entries):
        if entry.entry_id in bad_entries:
            return index
    return None


def _retry_due(ctx: PullContext, category: str, preferred: str | None, totals: Totals) -> None:
    """Retry this category's failures whose time has come, and waiting ones whose record has
    arrived (the others are not fetched again only to wait on)."""
    due = ctx.local.due_failures(OPERATION, category, ctx.clock())
    needed = sorted({f.depends_on for f in due if f.status == "waiting" and f.depends_on})
    if needed:
        names = [c.name for c in cats.all_categories()]
        arrived = set(ctx.local.read_any(names, needed))
        due = [
            f
            for f in due
            if f.status != "waiting" or f.depends_on is None or f.depends_on in arrived
        ]
    if not due:
        return
    items: list[tuple[Category, str, FeedEntry]] = []
    for f in due:
        # The origin the entry named: without it the record was labelled as the parent's.
        entry = FeedEntry(
            f.entry_id,
            f.category,
            f.action,  # type: ignore[arg-type]
            f.links,
            origin=f.origin,
        )
        items.append((cats.get(f.category), f.record_uuid, entry))
    plan = Plan(apply.collapse(items), preferred)
    plan.failures.update({(f.category, f.record_uuid): f for f in due})
    outcomes = _outcomes(ctx, plan)
    batch = page_commit(ctx, plan, outcomes, marker=None, extra_audit=[], totals=totals)
    ctx.local.commit(batch, now=ctx.clock())


def _plan(ctx: PullContext, entries: Sequence[FeedEntry], preferred: str | None) -> Plan:
    """Resolve each entry to the record it changes (the owner, for sub-resources), then collapse.

    Reads nothing local: :func:`_add_open_failures` adds the changes' open failures."""
    items: list[tuple[Category, str, FeedEntry]] = []
    unusable: list[tuple[FeedEntry, FhirsyncError]] = []
    for entry in entries:
        target = _target(ctx, entry)
        if target is None:
            message = f"category {entry.category!r} cannot be applied here"
            unusable.append((entry, UnknownResourceType(message)))
        elif (error := _unusable(entry, target[1])) is not None:
            unusable.append((entry, error))
        else:
            items.append((target[0], target[1], entry))
    return Plan(apply.collapse(items), preferred, unusable=unusable)


def _unusable(entry: FeedEntry, uuid: str) -> InvalidResource | None:
    """Why this node cannot hold the record of ``entry`` (None when it can).

    A parent's feed may name anything. A record id, origin or link beyond what the store keeps
    (``store.tables``; PostgreSQL refuses an oversized or NUL-holding value where SQLite stores
    it) would fail the page's whole commit, and so stop the feed at this entry for good.
    """
    if not cats.is_valid_id(uuid):
        why = f"its record id {uuid[:80]!r} is not usable (letters, digits, '-', '.'; 1-64)"
    elif entry.origin is not None and len(entry.origin) > ORIGIN_MAX:
        why = f"its origin is longer than {ORIGIN_MAX} characters"
    elif any(len(link) > _LINK_MAX for link in entry.links.values()):
        why = f"a link is longer than {_LINK_MAX} characters"
    else:
        return None
    return InvalidResource(f"entry {entry.entry_id}: {why}")


def _drop_dismissed(ctx: PullContext, plan: Plan) -> None:
    """Leave out the changes whose failure for that very entry an administrator dismissed.

    With ``continue_on_failure`` off the marker stops just before a failed entry, so the next
    run reads it again: a dismissed one was fetched, failed and parked anew at every run, and
    the feed never moved on. (With it on, the marker is already past it.) A later entry about the
    record is a new change and is applied as usual.
    """
    if ctx.continue_on_failure or not plan.changes:
        return
    by_cat: dict[str, dict[str, str]] = {}
    for change in plan.changes:
        by_cat.setdefault(change.category.name, {})[change.uuid] = change.entry.entry_id
    dropped = {
        (name, uuid)
        for name, entries in by_cat.items()
        for uuid in ctx.local.dismissed(OPERATION, name, entries)
    }
    if dropped:
        plan.changes = [c for c in plan.changes if (c.category.name, c.uuid) not in dropped]


def _add_open_failures(ctx: PullContext, plan: Plan) -> None:
    """Attach the open failures of the plan's records (their retries and audit chain)."""
    by_cat: dict[str, list[str]] = {}
    for change in plan.changes:
        by_cat.setdefault(change.category.name, []).append(change.uuid)
    for name, uuids in by_cat.items():
        for uuid, failure in ctx.local.open_failures(OPERATION, name, uuids).items():
            plan.failures[(name, uuid)] = failure


def _target(ctx: PullContext, entry: FeedEntry) -> tuple[Category, str] | None:
    category = cats.find(entry.category)
    if category is None:
        return None
    if category.is_subresource:
        owner = ctx.transport.owner_ref(category, entry.links)
        if owner is None:
            return None
        # The owner changed: its current body carries the sub-resource (re-sync it).
        return owner
    uuid = ctx.transport.extract_uuid(category, entry.links)
    return (category, uuid) if uuid else None


def _outcomes(
    ctx: PullContext, plan: Plan, ready: _Ready | None = None
) -> dict[tuple[str, str], Outcome]:
    """Decide every change of the plan: fetch what is needed in batches and validate the bodies
    (``ctx.checker``) unless ``ready`` holds them already, then apply the rules."""
    changes = plan.changes
    locals_: dict[tuple[str, str], Record] = {}
    by_cat: dict[str, list[Change]] = {}
    for change in changes:
        by_cat.setdefault(change.category.name, []).append(change)
    for name, group in by_cat.items():
        for uuid, rec in ctx.local.read_many(cats.get(name), [c.uuid for c in group]).items():
            locals_[(name, uuid)] = rec
    if ready is None:
        ready = _prepare(ctx, changes, plan.preferred)
    # Records not held here too: one voided before this node ever pulled it arrives voided, so
    # the records that refer to it (an encounter of a voided patient) do not wait for ever.
    last = _fetch_last(ctx, [c for c in changes if c.wants_last_body], plan.preferred)
    out: dict[tuple[str, str], Outcome] = {}
    for change in changes:
        key = (change.category.name, change.uuid)
        origin = apply.origin_of(change.entry, ctx.parent_url, ctx.below)
        if change.needs_fetch:
            body, error = ready.fetched.get(key, (None, None))
            checked = ready.checked.get(key)
            out[key] = apply.content_change(change, body, error, origin, checked)
        else:
            out[key] = apply.state_change(change, locals_.get(key), origin, last.get(key))
    _check_dependencies(ctx, out)
    return out


_Fetched = dict[tuple[str, str], tuple[Mapping[str, object] | None, RecordError | None]]


def _fetch_batches(
    ctx: PullContext, changes: Sequence[Change], preferred: str | None
) -> Iterator[_Fetched]:
    """Fetch the parent's copies in batches, one request per batch and client where possible."""
    groups: dict[tuple[str, str], tuple[Category, SourceClient, list[RecordRef]]] = {}
    for change in changes:
        client = ctx.transport.choose(change.category, change.entry.links, preferred)
        group = groups.setdefault(
            (change.category.name, client.name), (change.category, client, [])
        )
        group[2].append(RecordRef(change.uuid, change.entry.links))
    for category, client, refs in groups.values():
        for start in range(0, len(refs), ctx.batch_size):
            out: _Fetched = {}
            result = client.fetch(category, refs[start : start + ctx.batch_size])
            for uuid, body in result.found.items():
                out[(category.name, uuid)] = (body, None)
            for uuid in result.absent:
                out[(category.name, uuid)] = (None, None)
            for uuid, error in result.failed.items():
                out[(category.name, uuid)] = (None, error)
            yield out


def _check_dependencies(ctx: PullContext, out: dict[tuple[str, str], Outcome]) -> None:
    """Turn writes whose subject/patient/encounter is not held locally into waits (promise 3)."""
    needed: dict[tuple[str, str], list[tuple[tuple[str, ...], str]]] = {}
    for key, outcome in out.items():
        if isinstance(outcome, Write) and outcome.write.body is not None:
            refs = [
                (names, uuid)
                for names, uuid in apply.references(outcome.write.body)
                if any(n in ctx.enabled for n in names)
            ]
            if refs:
                needed[key] = refs
    if not needed:
        return
    writing = {uuid for (_, uuid), o in out.items() if isinstance(o, Write)}
    all_names = sorted({n for refs in needed.values() for names, _ in refs for n in names})
    all_uuids = sorted({u for refs in needed.values() for _, u in refs} - writing)
    present = set(ctx.local.read_any(all_names, all_uuids)) | writing
    for key, refs in needed.items():
        missing = next((uuid for _, uuid in refs if uuid not in present), None)
        if missing is not None:
            error = DependencyMissing(
                f"waits for {missing}, which is not here yet",
                category=key[0],
                uuid=key[1],
                detail=missing,
            )
            out[key] = Fail(error)


def connect_parent(config: NodeConfig) -> tuple[FeedReader, ClientFacade]:
    """The parent side: the feed reader and the client facade (plug-ins included)."""
    return FeedReader.for_parent(config), ClientFacade.for_parent(config)


def build_context(
    config: NodeConfig,
    db: Database,
    feed: Any,
    transport: Any,
    listener: Listener,
    *,
    include_own: bool = False,
) -> PullContext:
    """The context of one pull run of ``config``'s node from its parent (``include_own``: also
    apply changes that began on this node, see :attr:`FilterChain.skip_own`)."""
    settings = config.settings
    instance_id, parent = config.instance_id, config.parent_url or ""
    policy = AuditPolicy(
        config.sync2.general.persist_success_audit, config.sync2.general.persist_failure_audit
    )
    return PullContext(
        local=StoreLocalSide(db, instance_id, policy, conflict_hook(config)),
        feed=feed,
        transport=transport,
        filters=FilterChain(
            instance_id,
            settings.location_filter,
            tuple(load_plugins()),
            skip_own=not include_own,
        ),
        policy=RetryPolicy.from_settings(settings),
        parent_url=parent,
        local_url=config.base_url,
        enabled=frozenset(config.sync2.pull.enabled_categories()),
        continue_on_failure=settings.continue_on_failure,
        batch_size=settings.fetch_batch_size,
        listener=listener,
        clock=lambda: datetime.now(UTC),
        checker=make_checker(settings.pull_validation_workers),
        below=_below(db),
    )


def _below(db: Database) -> frozenset[str]:
    with db.read() as conn:
        return children.relaying_origins(conn)
