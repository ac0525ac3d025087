"""One push run of a node, start to finish: lock, push each enabled class in order, report.

Used by ``fhirsync push``, the scheduled push in ``fhirsync serve`` and the demo. A run works
whatever ``push.enabled`` says (that flag only governs the schedule). Two push runs of one node
never overlap: a database lock is taken first, so a manual run beside a scheduled one answers
"busy" instead of sending the same batch twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from fhirsync.categories import Category
from fhirsync.clients.base import RecordRef
from fhirsync.clients.facade import ClientFacade
from fhirsync.clients.push_http import HttpPushSender
from fhirsync.clients.push_route import PluginRoutedSender
from fhirsync.errors import (
    AuthError,
    ConfigurationError,
    InvalidResource,
    RequestError,
    TransientError,
)
from fhirsync.runtime import bulk_settings, quick_handoffs
from fhirsync.settings import NodeConfig
from fhirsync.store import locks, runs
from fhirsync.store.audit import AuditPolicy
from fhirsync.store.engine import Database
from fhirsync.store.outbox import StoreOutboxSide
from fhirsync.sync import apply
from fhirsync.sync.push import (
    ABSENT,
    OPERATION,
    Absent,
    Fetcher,
    PushContext,
    Sender,
    Totals,
    push_categories,
)
from fhirsync.sync.reconcile import Remote, reconciler_for, remote_of
from fhirsync.sync.retry import RetryPolicy
from fhirsync.sync.status import (
    Listener,
    Outcome,
    RunFinished,
    RunStarted,
    ignore,
    on_progress,
)

LOCK_NAME = "push"
LOCK_TTL = 600.0


def _now() -> datetime:
    return datetime.now(UTC)


def build_context(
    config: NodeConfig,
    db: Database,
    sender: Sender,
    listener: Listener = ignore,
    fetch: Fetcher | None = None,
) -> PushContext:
    """The push context of a node (its store, retry policy and settings) around ``sender``."""
    settings = config.settings
    general = config.sync2.general
    reconciler = reconciler_for(config)
    local = StoreOutboxSide(
        db,
        config.instance_id,
        AuditPolicy(general.persist_success_audit, general.persist_failure_audit),
        # The parent's copies of records it refused as stale are decided in the commit.
        reconciler.pushed,
    )
    return PushContext(
        local=local,
        transport=sender,
        policy=RetryPolicy.from_settings(settings),
        parent_url=_parent(config),
        local_url=config.base_url,
        continue_on_failure=settings.continue_on_failure,
        batch_size=settings.fetch_batch_size,
        listener=listener,
        clock=_now,
        reconciler=reconciler,
        fetch=fetch,
    )


def parent_fetcher(facade: ClientFacade, preferred: str | None = None) -> Fetcher:
    """Reads the parent's current copies through ``facade`` (for 412 answers to a push).

    A record the search leaves out is read once more, inactive records included, where the
    client can (``apply.LastBodySource``): a record served then is voided or retired at the
    parent (None, as before); one that is not (404/410) is :data:`ABSENT`. Without such a
    client the two cannot be told apart and the record counts as voided (a conflict a person
    sees, never a silent overwrite). A record it cannot read (a copy that fails validation, a
    failed read) is left out."""

    def fetch(category: Category, uuids: Sequence[str]) -> dict[str, Remote | Absent | None]:
        refs = [RecordRef(u, category.links(u)) for u in uuids]
        client = facade.choose(category, refs[0].links, preferred)
        result = client.fetch(category, refs)
        out: dict[str, Remote | Absent | None] = {u: None for u in result.absent}
        for uuid, body in result.found.items():
            try:
                fixed, state = apply.checked_body(category, uuid, body)
            except InvalidResource:
                # Left out, unread: the 412 stays this record's failure (retried, visible)
                # instead of ending the whole push run.
                continue
            out[uuid] = remote_of(fixed, state)
        unseen = [ref for ref in refs if ref.uuid in result.absent]
        if unseen and isinstance(client, apply.LastBodySource):
            out.update({u: ABSENT for u in client.fetch_last(category, unseen).absent})
        return out

    return fetch


def _parent(config: NodeConfig) -> str:
    url = config.parent_url
    if url is None:
        raise ConfigurationError(
            "parentFeedLocation is not set: this node has no parent to push to",
            field="general.parentFeedLocation",
        )
    return url


def http_sender(config: NodeConfig) -> HttpPushSender:
    """The HTTP sender to the node's parent with its parent credentials, already greeting it."""
    settings = config.settings
    sender = HttpPushSender(
        _parent(config),
        config.parent_auth,
        connect_timeout=settings.http_connect_timeout,
        read_timeout=max(settings.http_read_timeout, 60.0),
        ca_file=config.parent_ca_path,
    )
    # The parent's password check overlaps the reading of the first batch.
    sender.greet()
    return sender


def run_push(
    config: NodeConfig,
    db: Database,
    *,
    listener: Listener = ignore,
    sender_factory: Callable[[NodeConfig], HttpPushSender] = http_sender,
) -> RunFinished:
    """Push every enabled ``push.classes`` category in order; the outcome as a typed event."""
    started = time.monotonic()
    config.instance_id  # noqa: B018 - validates localInstanceId before anything else (spec §2.4)
    categories = [
        (c.category.lower(), c.preferred_client or config.settings.preferred_client)
        for c in config.sync2.push.classes
        if c.enabled
    ]
    owner = locks.new_owner()
    if not locks.acquire(db, LOCK_NAME, owner, LOCK_TTL):
        return _finish(
            db, listener, "busy", {}, started=started, error="another push run is in progress"
        )
    # Extended as batches are settled: a long push outlasts LOCK_TTL, and an expired lock let
    # a second run start and send the same batches again.
    listener = on_progress(listener, locks.keeper(db, LOCK_NAME, owner, LOCK_TTL))
    try:
        listener(RunStarted(OPERATION, tuple(name for name, _ in categories)))
        with db.write() as conn:
            runs.save(conn, OPERATION, started_at=_now(), outcome=None, last_error=None)
        sender = sender_factory(config)
        facade = ClientFacade.for_parent(config)
        totals: dict[str, Totals] = {}
        try:
            routed = PluginRoutedSender(sender, facade.clients, facade.global_preferred)
            ctx = build_context(config, db, routed, listener, parent_fetcher(facade))
            # As pull: batches of records in flight make the default gc walk the heap again
            # and again. The sender thread must win the interpreter lock back quickly when the
            # parent answers, or the parent idles.
            with bulk_settings(), quick_handoffs():
                totals = push_categories(ctx, categories)
        # The error is kept with its class, as pull keeps it: /health shows only the class.
        except TransientError as exc:
            error = f"{type(exc).__name__}: {exc}"
            return _finish(db, listener, "unreachable", totals, started=started, error=error)
        except AuthError as exc:  # the parent answers: its account for this node is the problem
            error = f"{type(exc).__name__}: {exc}"
            return _finish(db, listener, "configuration", totals, started=started, error=error)
        except RequestError as exc:
            error = f"{type(exc).__name__}: {exc}"
            return _finish(db, listener, "failures", totals, started=started, error=error)
        finally:
            sender.close()
            facade.close()
        failed = sum(t.failed for t in totals.values())
        return _finish(
            db, listener, "failures" if failed else "ok", totals, started=started, error=None
        )
    finally:
        locks.release(db, LOCK_NAME, owner)


def _finish(
    db: Database,
    listener: Listener,
    outcome: Outcome,
    totals: dict[str, Totals],
    *,
    started: float,
    error: str | None,
) -> RunFinished:
    event = RunFinished(
        OPERATION,
        outcome,
        events_read=sum(t.read for t in totals.values()),
        applied=sum(t.sent for t in totals.values()),
        failures=sum(t.failed for t in totals.values()),
        seconds=time.monotonic() - started,
        error=error,
    )
    if outcome != "busy":
        with db.write() as conn:
            runs.save(
                conn,
                OPERATION,
                finished_at=_now(),
                outcome=outcome,
                events_read=event.events_read,
                applied=event.applied,
                failed=event.failures,
                last_error=error,
            )
    listener(event)
    return event
