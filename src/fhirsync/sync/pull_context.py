"""What one pull run works with: its context (built by ``sync.pull.build_context``), its counts,
one page's plan, and the protocols of the parent side it reads from."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from fhirsync.categories import Category
from fhirsync.clients.base import LocalSide, SourceClient
from fhirsync.errors import FhirsyncError
from fhirsync.records import FeedEntry
from fhirsync.store.failures import Failure
from fhirsync.sync.apply import Change
from fhirsync.sync.checking import BodyChecker, InlineChecker
from fhirsync.sync.filters import FilterChain
from fhirsync.sync.retry import RetryPolicy
from fhirsync.sync.status import Listener

OPERATION = "pull"


class FeedChunk(Protocol):
    """One page of feed entries after the marker (``feed.reader``)."""

    entries: Sequence[FeedEntry]
    page: int | None
    recovered: str | None


class FeedSource(Protocol):
    """Reads a category's feed forward from a marker (``feed.reader.FeedReader``)."""

    def read(
        self, category: str, *, after_entry_id: str | None = None, page: int | None = None
    ) -> Iterable[FeedChunk]:
        """Page chunks after the marked entry; TransientError/MalformedFeed on a bad page."""
        ...


class Transport(Protocol):
    """Picks the client of an entry and reads ids from links (``clients.facade.ClientFacade``)."""

    def choose(
        self, category: Category, links: Mapping[str, str], preferred: str | None = None
    ) -> SourceClient:
        """The client to fetch ``category`` records with, given an entry's links."""
        ...

    def extract_uuid(self, category: Category, links: Mapping[str, str]) -> str | None:
        """The record uuid named by ``links`` (spec §5.3)."""
        ...

    def owner_ref(
        self, category: Category, links: Mapping[str, str]
    ) -> tuple[Category, str] | None:
        """For a sub-resource entry: the owning category and record uuid."""
        ...


@dataclass
class PullContext:
    """Everything a pull of one parent needs; built by the runner."""

    local: LocalSide
    feed: FeedSource
    transport: Transport
    filters: FilterChain
    policy: RetryPolicy
    parent_url: str
    local_url: str
    enabled: frozenset[str]
    continue_on_failure: bool = True
    batch_size: int = 500
    listener: Listener = field(default=lambda _e: None)
    clock: Callable[[], datetime] = field(default=datetime.now)
    checker: BodyChecker = field(default_factory=InlineChecker)
    """Where fetched bodies are validated (``sync.checking``); every body is validated."""
    below: frozenset[str] = frozenset()
    """The nodes whose changes come up through this node's children (``apply.origin_of``)."""


@dataclass
class Totals:
    """Counts of one category's pull."""

    read: int = 0
    applied: int = 0
    failed: int = 0


@dataclass
class Plan:
    """One page's work: the changes, with where each came from."""

    changes: list[Change]
    preferred: str | None
    failures: dict[tuple[str, str], Failure] = field(default_factory=dict)
    unusable: list[tuple[FeedEntry, FhirsyncError]] = field(default_factory=list)
    """Entries that name no record this node can hold, and why: audited as failed, never
    fetched or retried (their links stay what they are)."""
