"""The interfaces the sync engine owns: a remote source/target of records, and the local side.

Every implementation (``fhir.py``, ``rest.py``, plug-ins registered in the ``fhirsync.clients``
entry-point group) passes ``tests/contract/test_source_client.py``.

Error contract for every method:
- a connection failure, timeout or 5xx for the request raises a
  :class:`~fhirsync.errors.TransientError` subclass and nothing is half-applied; the caller stops
  the run and keeps its marker;
- a problem with one record never raises (a 5xx for one entry of an answered batch included): it
  is reported per uuid in the result, as a :class:`~fhirsync.errors.RecordError` (so one bad
  record cannot stop a batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from fhirsync.categories import Category
from fhirsync.errors import RecordError
from fhirsync.records import Action, MarkerKey, Record, RecordState
from fhirsync.store.failures import Failure
from fhirsync.store.local import CommitResult, PageCommit
from fhirsync.store.markers import Marker


@dataclass(frozen=True, slots=True)
class RecordRef:
    """One record to fetch: its uuid and the links its feed entry carried."""

    uuid: str
    links: Mapping[str, str]


@dataclass(slots=True)
class FetchResult:
    """What a batch fetch found. Every requested uuid is in exactly one of the three maps."""

    found: dict[str, dict[str, Any]] = field(default_factory=dict)
    """uuid → body (FHIR resource or REST representation) as the source serves it."""
    absent: set[str] = field(default_factory=set)
    """uuids the source does not have, or has voided/retired/deleted (404 or 410)."""
    failed: dict[str, RecordError] = field(default_factory=dict)
    """uuids whose fetch failed for a record-level reason (e.g. an unparsable body)."""


@dataclass(frozen=True, slots=True)
class OutgoingChange:
    """One change to send to a target: the record as stored locally, and what happened to it."""

    category: str
    uuid: str
    action: Action
    body: Mapping[str, Any] | None
    state: RecordState
    base_version: str | None = None
    """The version the sender last agreed with the target (If-Match), when known."""


@dataclass(slots=True)
class SendResult:
    """What a batch send achieved, per uuid."""

    sent: set[str] = field(default_factory=set)
    failed: dict[str, RecordError] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    """uuid → the target's version after the write, when the target reported it (ETag)."""


@runtime_checkable
class SourceClient(Protocol):
    """A transport to one remote node (FHIR, REST, or a plug-in)."""

    name: str
    """The client name used in links maps and ``preferredClient`` (``fhir``, ``rest``, ...)."""

    def supports(self, category: Category) -> bool:
        """True when this client can fetch and send records of ``category``."""
        ...

    def fetch(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        """Fetch records in as few requests as the transport allows. Idempotent; no side effects."""
        ...

    def send(
        self,
        category: Category,
        changes: Sequence[OutgoingChange],
        *,
        origin: str | None = None,
    ) -> SendResult:
        """Write changes to the remote (create/update keep the uuid; voids and deletes too).

        ``origin`` is the node the changes came from first (push gives it): a client writing to
        a fhirsync node sends it as ``X-Fhirsync-Origin``, so the change never travels back."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class LocalSide(Protocol):
    """How the engine reads and writes the node it runs on (never over HTTP to itself).

    The in-process store is the first implementation; an agent beside a Java OpenMRS server will be
    the second.
    """

    instance_id: str

    def read_many(self, category: Category, uuids: Sequence[str]) -> dict[str, Record]:
        """Current local records (any state) by uuid; missing uuids are left out."""
        ...

    def read_any(self, categories: Sequence[str], uuids: Sequence[str]) -> dict[str, Record]:
        """Local records of any of ``categories`` by uuid (dependency checks)."""
        ...

    def marker(self, key: MarkerKey) -> Marker:
        """The committed feed position of ``key`` (empty when never read)."""
        ...

    def open_failures(
        self, operation: str, category: str, uuids: Sequence[str]
    ) -> dict[str, Failure]:
        """Open failures of these records by uuid."""
        ...

    def due_failures(self, operation: str, category: str, now: datetime) -> list[Failure]:
        """Failures of ``category`` whose retry is due now (and every waiting one)."""
        ...

    def dismissed(self, operation: str, category: str, entries: Mapping[str, str]) -> set[str]:
        """The records among ``entries`` (uuid → entry id) whose failure for that very event an
        administrator dismissed."""
        ...

    def commit(self, batch: PageCommit, *, now: datetime) -> CommitResult:
        """Apply a page's writes, failures, audit rows and marker move all or nothing."""
        ...
