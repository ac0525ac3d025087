"""What every part of a push shares: the context of a push to one parent, its totals, and the
Protocols of the local side and the sender it drives (``sync/push.py`` runs them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Final, Protocol

from fhirsync.categories import Category
from fhirsync.clients.base import LocalSide, OutgoingChange, SendResult
from fhirsync.store.agreed import Agreed
from fhirsync.store.outbox import OutboxBatch
from fhirsync.sync.reconcile import Reconciler, Remote
from fhirsync.sync.retry import RetryPolicy
from fhirsync.sync.status import Listener

OPERATION = "push"
PUSH_FEED_PREFIX = "push:"


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


class Absent(Enum):
    """The type of :data:`ABSENT`."""

    ABSENT = "absent"


ABSENT: Final = Absent.ABSENT
"""A parent's answer for a record it does not hold at all (its read answers 404 or 410: never
had it, lost it in a restore from an older backup, purged it), as opposed to one it holds voided,
retired or deleted: a 412 for it is no conflict, the record goes up again as new."""

Fetcher = Callable[[Category, Sequence[str]], dict[str, Remote | Absent | None]]
"""Reads the parent's current copies: None when the parent no longer serves the record as
active (voided, retired or deleted there, or the client cannot tell), :data:`ABSENT` when it
does not hold it at all."""


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
        in_order: bool = False,
    ) -> SendResult:
        """Write ``changes``; TransientError if the parent is unreachable, per-uuid failures.

        ``in_order``: nothing after the first change refused (other than a 412) is written."""
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
