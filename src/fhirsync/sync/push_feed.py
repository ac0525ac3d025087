"""Pushing a category's own feed in batches, with the next batch sent as soon as the parent
answers the one before.

Per batch the child reads the log and builds the Bundle, the parent validates and writes it, and
the child commits the outcome. Done one after the other, each side idles while the other works.
So, with ``continue_on_failure`` on, batch N+1 is read and prepared while batch N is in flight
and queued behind it on the one sender thread, which sends it the moment N's answer arrives
(no hand-over to the main thread in between); N's outcome is then settled and handed to the page
committer while N+1 is in flight. At most one request is in flight, and requests go in feed
order. The rules this keeps:

- **Bases.** A batch that names a record of the batch in flight, or of a page not yet committed,
  waits for that batch's answer and commit first (then reads again), so its ``If-Match`` names
  the version the earlier batch agreed on.
- **Marker.** Pages commit in order. When a send fails (parent down, a refused batch), nothing
  after it is sent (the queued batch sees the failure and stays unsent) or committed: the
  marker stays at the end of the last batch answered, and the next run sends the rest again. A
  batch in flight when something else fails is awaited but never committed (a resend is
  idempotent: unchanged writes are ignored, a stale base is a 412 that converges).
- **continue_on_failure off.** A failure stops the log where it happened, so nothing is sent
  before the batch before it is settled: batches go one at a time, and a batch goes in order,
  nothing after its first refused record (``push_batch.send``'s ``in_order``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from fhirsync.categories import Category
from fhirsync.clients.base import SendResult
from fhirsync.clients.push_http import signalling_written
from fhirsync.records import MarkerKey
from fhirsync.store.local import MarkerMove
from fhirsync.store.outbox import OutboxBatch, OutboxItem
from fhirsync.sync.committer import PageCommitter
from fhirsync.sync.push_batch import Item, Prepared, prepare, send
from fhirsync.sync.push_context import OPERATION, PushContext, Totals
from fhirsync.sync.push_settle import settle
from fhirsync.sync.status import CategoryStopped, RunProgress


@dataclass
class _Flight:
    """A batch sent and not yet settled."""

    prepared: Prepared
    move: MarkerMove | None
    events: int
    answer: Future[SendResult]
    on_wire: threading.Event
    """Set once the batch's request is written to the parent (or its job ended without)."""


class FeedPusher:
    """Pushes one category's feed from a marker position to the end of its log."""

    def __init__(
        self,
        ctx: PushContext,
        category: Category,
        preferred: str | None,
        totals: Totals,
        committer: PageCommitter,
        *,
        key: MarkerKey,
        total: int,
        retried: frozenset[str] = frozenset(),
        held: frozenset[str] = frozenset(),
        retried_through: int = 0,
    ) -> None:
        """``retried``: records sent just before, as they were after event ``retried_through``
        (their events up to it are not sent again)."""
        self.ctx, self.category, self.preferred = ctx, category, preferred
        self.totals, self.committer = totals, committer
        self.key, self.total, self.retried = key, total, retried
        # Records retried in this run that failed again: the log stops at the first of them.
        self.held = held
        self.retried_through = retried_through
        self.done = 0
        self._flight: _Flight | None = None
        self._sender: ThreadPoolExecutor | None = None

    def run(self, after: int) -> Totals:
        """Push from ``after`` to the end of the log (or to a failure that stops it)."""
        with ExitStack() as stack:
            if self.ctx.continue_on_failure:
                self._sender = stack.enter_context(
                    ThreadPoolExecutor(1, thread_name_prefix="push-send")
                )
            try:
                self._loop(after)
            except BaseException:
                self._abandon()
                raise
        return self.totals

    def _loop(self, after: int) -> None:
        while True:
            batch = self._read(after)
            if batch.last_event is None:
                return
            stop_at = min(
                (i.event.seq for i in batch.items if i.event.record_uuid in self.held),
                default=None,
            )
            events = batch.events_read
            move: MarkerMove | None = MarkerMove(
                self.key, batch.last_event.entry_id, batch.last_seq
            )
            relayed = batch.items
            if stop_at is not None:
                # Sent as far as the record that failed again; the marker stays just before it.
                relayed = [i for i in relayed if i.event.seq < stop_at]
                events = stop_at - 1 - batch.after_seq
                move = (
                    MarkerMove(self.key, relayed[-1].event.entry_id, stop_at - 1)
                    if relayed
                    else None
                )
            dismissed = self._dismissed(relayed)
            items = [
                Item(i.event.record_uuid, i.event.entry_id, i.event.seq, i.record)
                for i in relayed
                if (i.event.record_uuid not in self.retried or i.event.seq > self.retried_through)
                and i.event.record_uuid not in dismissed
            ]
            self.totals.read += events
            self.totals.skipped += events - len(relayed) + len(dismissed)
            prepared = prepare(self.ctx, self.category, self.preferred, items)
            self.totals.skipped += len(items) - len(prepared.items)
            if self._send(prepared, move, events) or stop_at is not None:
                self.ctx.listener(
                    CategoryStopped(
                        OPERATION, self.category.name, "RecordError", "continue_on_failure is off"
                    )
                )
                return
            after = batch.last_seq

    def _dismissed(self, items: Sequence[OutboxItem]) -> set[str]:
        """Records whose failed event an administrator dismissed: with ``continue_on_failure``
        off the marker stopped just before such a record, which was sent (and failed) again at
        every run, so the records after it never went up. Passed over, not sent (a later change
        of the record is a new event and goes up). With it on, the marker is already past them."""
        if self.ctx.continue_on_failure or not items:
            return set()
        entries = {i.event.record_uuid: i.event.entry_id for i in items}
        return self.ctx.local.dismissed(OPERATION, self.category.name, entries)

    def _read(self, after: int) -> OutboxBatch:
        """The next batch; read again once the batch in flight and the pending page are done
        when it names their records, or when the log looks finished (a commit may append)."""
        batch = self.ctx.local.read_outbox(self.category, after, self.ctx.batch_size)
        uuids = {i.event.record_uuid for i in batch.items}
        flight = self._flight
        if flight is not None and (
            batch.last_event is None or not flight.prepared.uuids.isdisjoint(uuids)
        ):
            self._flight = None
            self._settle(flight.prepared, flight.move, flight.events, flight.answer.result())
        if batch.last_event is None or self.committer.touches(uuids):
            self.committer.wait()
            batch = self.ctx.local.read_outbox(self.category, after, self.ctx.batch_size)
        return batch

    def _send(self, prepared: Prepared, move: MarkerMove | None, events: int) -> bool:
        """Send ``prepared``; pipelined, queue it right behind the batch in flight (the sender
        thread sends it the moment that one is answered), then settle that one. True when the
        category must stop."""
        if self._sender is None:
            # Not pipelined (continue_on_failure is off): sent in order, and nothing after a
            # refused record goes up.
            answer = send(self.ctx, prepared, in_order=not self.ctx.continue_on_failure)
            return self._settle(prepared, move, events, answer)
        previous = self._flight
        before = previous.answer if previous is not None else None
        on_wire = threading.Event()
        job = self._sender.submit(_send_after, self.ctx, prepared, before, on_wire)
        self._flight = _Flight(prepared, move, events, job, on_wire)
        if previous is None:
            return False
        # An exception here (parent down) leaves ``prepared`` unsent: its job sees the failure.
        answer = previous.answer.result()
        # The sender thread starts on ``prepared`` the moment that answer came: settling takes
        # the interpreter lock for milliseconds, so it waits until the request is out.
        on_wire.wait()
        return self._settle(previous.prepared, previous.move, previous.events, answer)

    def _settle(
        self, prepared: Prepared, move: MarkerMove | None, events: int, result: SendResult
    ) -> bool:
        """Commit a batch's outcome (on the committer) and report progress; True to stop."""
        page, stop = settle(self.ctx, prepared, result, move=move, totals=self.totals)
        self.committer.submit(page, self.ctx.clock(), prepared.uuids)
        self.done += events
        self.ctx.listener(
            RunProgress(
                OPERATION,
                self.category.name,
                self.done,
                max(self.total, self.done),
                self.totals.sent,
                self.totals.failed,
            )
        )
        return stop

    def _abandon(self) -> None:
        """After a failure: wait for the batch in flight (its outcome is never committed)."""
        flight, self._flight = self._flight, None
        if flight is not None:
            flight.answer.exception()


class _NotSent(Exception):
    """A queued batch not sent because the batch before it failed."""


def _send_after(
    ctx: PushContext,
    prepared: Prepared,
    before: Future[SendResult] | None,
    on_wire: threading.Event,
) -> SendResult:
    """Send ``prepared`` unless ``before`` (the batch sent just before it, on this same single
    sender thread, so already answered) failed: nothing after a failure is sent. ``on_wire`` is
    set when the first request is written, and in any case when this ends."""
    try:
        if before is not None and before.exception() is not None:
            raise _NotSent
        with signalling_written(on_wire.set):
            return send(ctx, prepared)
    finally:
        on_wire.set()
