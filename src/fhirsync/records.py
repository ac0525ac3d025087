"""Value types shared by every layer: stored records, change events, feed entries, marker keys."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

RecordState = Literal["active", "voided", "retired", "deleted"]
Action = Literal["CREATED", "UPDATED", "VOIDED", "UNVOIDED", "RETIRED", "UNRETIRED", "DELETED"]
ENTRY_ID_PREFIX = "tag:atomfeed.ict4h.org:"
ORIGIN_MAX = 255
"""The longest origin a node stores (an instance id, or a Java parent's URL): ``records.origin``."""


@dataclass(frozen=True, slots=True)
class Record:
    """One stored record: the current body and its bookkeeping."""

    category: str
    uuid: str
    body: bytes
    """Canonical JSON bytes as served (FHIR bodies include ``meta.versionId``/``lastUpdated``)."""
    version: int
    content_hash: str
    last_updated: datetime
    state: RecordState
    origin: str

    @property
    def is_active(self) -> bool:
        """True unless voided, retired or deleted."""
        return self.state == "active"

    def resource(self) -> dict[str, Any]:
        """The body parsed into a dict."""
        value: dict[str, Any] = orjson.loads(self.body)
        return value


@dataclass(frozen=True, slots=True)
class RecordWrite:
    """A requested change to one record, as the store's write path takes it."""

    category: str
    uuid: str
    body: Mapping[str, Any] | None
    """The new body; None keeps the stored body (a pure state change such as a void)."""
    origin: str
    state: RecordState = "active"
    expected_version: int | None = None
    """If set, the write fails with VersionMismatch unless the stored version equals it."""
    via: str | None = None
    """How the change arrived: None for a local edit, ``parent`` when pulled, ``child:{id}`` when
    pushed by a child. Push never sends a ``parent`` change back up (no echo)."""


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One row of the event log: what changed, when, and where the change began."""

    seq: int
    """Position of the event in its category's feed (1-based, gap-free)."""
    category: str
    record_uuid: str
    event_uuid: str
    action: Action
    timestamp: datetime
    origin: str
    via: str | None = None

    @property
    def entry_id(self) -> str:
        """The Atom entry id, ``tag:atomfeed.ict4h.org:{event uuid}``."""
        return ENTRY_ID_PREFIX + self.event_uuid


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One parsed Atom entry of an (OpenMRS or fhirsync) feed page."""

    entry_id: str
    category: str
    action: Action
    links: Mapping[str, str]
    updated: datetime | None = None
    title: str | None = None
    origin: str | None = None
    """The node the change began on (fhirsync extension element); None on Java feeds."""
    filter_tags: tuple[str, ...] = ()
    """Raw ``<feedFilter>`` XML terms (spec §3.6)."""


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One parsed Atom feed page."""

    self_url: str
    via_url: str | None
    page_number: int | None
    prev_archive: str | None
    next_archive: str | None
    entries: tuple[FeedEntry, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class MarkerKey:
    """What a marker position means: which feed, which category, under which filter settings."""

    feed_base: str
    category: str
    filter_hash: str

    @property
    def key(self) -> str:
        """A stable string key for storage."""
        raw = f"{self.feed_base.rstrip('/')}|{self.category}|{self.filter_hash}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]
