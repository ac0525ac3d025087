"""Pushing one category to the parent: read own events, drop echoes, send current copies, commit.

The mirror image of ``sync/pull.py`` (spec §5.10), with the same rules:

- the node's own event log is read straight from the store (``store/outbox.py``), a batch of
  ``batch_size`` events at a time, from a push marker per (parent, category);
- repeated events of one record collapse; a record whose newest event came from the parent is not
  sent back up (no echo); local edits and this node's children's changes are relayed;
- each record's ORIGIN travels with it, so the parent (and every node after it) keeps the node the
  change began on, and pull on that node later skips it;
- the current local copy is sent through the client facade in one request per batch and client,
  the next batch prepared and sent while the one before is settled (``sync/push_feed.py``);
- a transient error (parent down) escapes before the commit: the marker stays and the next run
  sends the batch again. Sending is idempotent (upserts keyed by uuid; the parent's store ignores
  an unchanged write), so a resend after a crash applies nothing twice;
- a record the parent rejects is retried with backoff, then parked, and with
  ``continue_on_failure`` the log moves on; failures, audit rows and the marker move commit in one
  local transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fhirsync import categories as cats
from fhirsync.categories import Category
from fhirsync.records import MarkerKey
from fhirsync.sync.committer import PageCommitter
from fhirsync.sync.push_batch import Item, prepare, send
from fhirsync.sync.push_context import (
    ABSENT,
    OPERATION,
    PUSH_FEED_PREFIX,
    Absent,
    Fetcher,
    OutboxSide,
    PushContext,
    Sender,
    Totals,
)
from fhirsync.sync.push_feed import FeedPusher
from fhirsync.sync.push_settle import settle

__all__ = [
    "ABSENT",
    "OPERATION",
    "PUSH_FEED_PREFIX",
    "Absent",
    "Fetcher",
    "OutboxSide",
    "PushContext",
    "Sender",
    "Totals",
    "marker_key",
    "pending",
    "push_categories",
    "push_category",
]


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
    # Read before the records are: the retries below send every change up to here, and a
    # change made after it goes with the feed (else an edit made while the run works is lost).
    sent_through = ctx.local.outbox_head(category)
    retried = _retry_due(ctx, category, preferred, totals)
    # With continue_on_failure off the log stops at a record that failed again: left out of the
    # feed as just retried, it let the records after it go up and the marker pass it.
    held = (
        frozenset(ctx.local.open_failures(OPERATION, category.name, sorted(retried)))
        if retried and not ctx.continue_on_failure
        else frozenset()
    )
    retried |= _send_pending(ctx, category, preferred, totals)
    key = marker_key(ctx, category.name)
    after = ctx.local.marker(key).last_page or 0
    total = ctx.local.outbox_head(category) - after
    if total <= 0:
        return totals  # nothing new in the log: no committer or sender threads to start
    committer = PageCommitter(ctx.local)
    try:
        pusher = FeedPusher(
            ctx,
            category,
            preferred,
            totals,
            committer,
            key=key,
            total=total,
            retried=frozenset(retried),
            held=held,
            retried_through=sent_through,
        )
        return pusher.run(after)
    finally:
        committer.close()


def _retry_due(
    ctx: PushContext, category: Category, preferred: str | None, totals: Totals
) -> set[str]:
    """Send again the records of ``category`` whose retry is due; returns their uuids."""
    due = ctx.local.due_failures(OPERATION, category.name, ctx.clock())
    if not due:
        return set()
    current = ctx.local.read_many(category, [f.record_uuid for f in due])
    items = [Item(f.record_uuid, f.entry_id, 0, current.get(f.record_uuid)) for f in due]
    _push_now(ctx, category, preferred, items, totals)
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
    items = [Item(u, f"pending:{u}", 0, current.get(u)) for u in uuids]
    _push_now(ctx, category, preferred, items, totals)
    return set(uuids)


def _push_now(
    ctx: PushContext,
    category: Category,
    preferred: str | None,
    items: Sequence[Item],
    totals: Totals,
) -> None:
    """Send ``items`` outside the feed (no marker move) and commit the outcome at once."""
    prepared = prepare(ctx, category, preferred, items)
    totals.skipped += len(items) - len(prepared.items)
    page, _stop = settle(
        ctx, prepared, send(ctx, prepared), move=None, totals=totals, retrying=True
    )
    ctx.local.commit(page, now=ctx.clock())


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
