"""Reads one category's feed forward from a marker, one page at a time (spec §4.3, fixed).

- First read (no marker): start at page 1 directly. Sync 2.0 walked back from ``recent`` through
  every archive first (spec §13.2); we never do. An empty feed (page 1 missing) reads ``recent``.
- With a marker (entry id + page): fetch the marker's page, skip up to and including the marked
  entry, then follow ``next-archive`` until a page has none (that one is ``recent``).
- Recovery (spec §13.5 made non-fatal): if the marked entry is not on its page, look on the
  neighbouring pages (a Java publisher's pages only shift when its chunking changes), then on every
  other page from the last one down (the publisher's page size changed); if it is nowhere (the
  publisher was restored from a backup), read the feed again from page 1. Either is said in
  ``recovered`` (the engine writes it to the audit). Reading never stops for good on a lost marker.
- Page URLs are built from the base URL this reader was given, never from the publisher's absolute
  ``self``/``via`` links (spec §13.5); only the page NUMBER is taken from ``via``/``next-archive``.
- Errors: a transport failure, 5xx or 401 raises the mapped fhirsync error (a TransientError stops
  the run with the marker kept); a page that cannot be parsed, or a missing announced page, raises
  MalformedFeed. Only one page is held in memory at a time.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import httpx

from fhirsync.clients.http import error_for_response, make_http_client, request
from fhirsync.errors import (
    ConfigurationError,
    FeedNotFound,
    MalformedFeed,
    RecordError,
    ServerUnavailable,
)
from fhirsync.feed.parse import parse_page
from fhirsync.records import FeedEntry, FeedPage
from fhirsync.settings import NodeConfig

ATOM_ACCEPT = "application/atom+xml, application/xml;q=0.9"
_MAX_PAGE_NUMBER = 10**9


@dataclass(slots=True)
class FeedPageChunk:
    """One page of a feed and the entries of it that come after the marker."""

    feed: FeedPage
    """The parsed page."""
    page: int | None
    """The page's number (from its ``via`` link); the marker stores it with the last entry."""
    entries: Sequence[FeedEntry] = field(default_factory=tuple)
    """The entries to process, in feed order."""
    recovered: str | None = None
    """A warning when the marker's entry was not where the marker said (for the audit)."""


class FeedReader:
    """Reads feeds of one publisher (``{base}/ws/atomfeed/{category}/...``) over one client."""

    def __init__(self, http: httpx.Client, base_url: str, *, owns_http: bool = False) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self.requests = 0
        """Pages fetched so far (tests assert on it; a first read never walks back)."""
        self._recent: dict[str, FeedPage] = {}
        """``recent`` pages fetched by :meth:`_latest` during the current read, not asked twice."""
        self._closer = weakref.finalize(self, http.close) if owns_http else None

    @classmethod
    def for_parent(cls, config: NodeConfig, base_url: str | None = None) -> FeedReader:
        """A reader of ``config``'s parent feed (or of the parent at ``base_url``) with the
        node's parent credentials and timeouts."""
        parent = base_url.rstrip("/") if base_url else config.parent_url
        if parent is None:
            raise ConfigurationError(
                "parentFeedLocation is not set", field="general.parentFeedLocation"
            )
        settings = config.settings
        http = make_http_client(
            parent,
            config.parent_auth,
            connect_timeout=settings.http_connect_timeout,
            read_timeout=settings.http_read_timeout,
            pool_size=2,
            ca_file=config.parent_ca_path,
        )
        return cls(http, parent, owns_http=True)

    def close(self) -> None:
        """Close the HTTP client when this reader made it."""
        if self._closer is not None:
            self._closer()

    def holds(self, category: str, page: int, entry_id: str) -> bool:
        """True when page ``page`` of ``category``'s feed holds the entry ``entry_id`` (False
        when the feed has no such page, even if a Java publisher says so with a 500)."""
        found = self._page_or_beyond(category, page)
        return found is not None and any(e.entry_id == entry_id for e in found.entries)

    def read(
        self, category: str, *, after_entry_id: str | None = None, page: int | None = None
    ) -> Iterator[FeedPageChunk]:
        """Chunks of ``category``'s feed after the marked entry, page by page, to the end."""
        self._recent.pop(category, None)
        if after_entry_id is None:
            current = self._first_page(category)
            yield FeedPageChunk(current, self._number(current, None), current.entries)
        else:
            current, entries, recovered = self._resume(category, after_entry_id, page)
            yield FeedPageChunk(current, self._number(current, page), entries, recovered)
        number = self._number(current, None)
        while current.next_archive:
            following = _page_of(current.next_archive)
            if following is None or (number is not None and following <= number):
                raise MalformedFeed(
                    f"{category} feed page {number}: next-archive link "
                    f"{current.next_archive!r} does not name a later page"
                )
            fetched = self._page(category, following)
            if fetched is None:
                raise MalformedFeed(f"{category} feed: page {following} is announced but missing")
            current, number = fetched, following
            yield FeedPageChunk(current, self._number(current, following), current.entries)

    # --- starting points ------------------------------------------------------------------------

    def _first_page(self, category: str) -> FeedPage:
        """Page 1, or ``recent`` when the feed has no page 1 (empty, or a Java 500 for it)."""
        first = self._page_or_beyond(category, 1)
        if first is not None:
            return first
        # An empty Java feed answers page 1 with a 500 and _latest has just read recent: reuse it.
        return self._recent.pop(category, None) or self._fetch(category, "recent")

    def _resume(
        self, category: str, entry_id: str, page: int | None
    ) -> tuple[FeedPage, Sequence[FeedEntry], str | None]:
        """The page holding the marked entry and the entries after it, or a recovery."""
        if page is None:
            return self._scan_for(category, entry_id)
        marked = self._page_or_beyond(category, page)
        if marked is not None:
            after = _after(marked, entry_id)
            if after is not None:
                return marked, after, None
        # Only ask for pages that exist: a Java publisher answers 500 beyond its last page.
        latest = self._latest(category)
        for number in _search_order(page, latest):
            other = self._page(category, number)
            after = _after(other, entry_id) if other is not None else None
            if other is not None and after is not None:
                note = f"entry {entry_id} was on page {number}, not page {page}"
                return other, after, note
        if latest < _MAX_PAGE_NUMBER:
            # Every page was searched: the feed no longer holds the entry (the publisher was
            # restored from a backup, or replaced). Its new entries may be on any page, so only a
            # read from the start misses none (records already held are not written again).
            first = self._first_page(category)
            note = f"entry {entry_id} is nowhere in the feed; read again from page 1"
            return first, first.entries, note
        if marked is None:
            # A publisher whose last page has no number: start at the marker's page or recent.
            marked = self._fetch(category, "recent")
        note = f"entry {entry_id} not found on page {page}; resumed from the start of that page"
        return marked, marked.entries, note

    def _scan_for(
        self, category: str, entry_id: str
    ) -> tuple[FeedPage, Sequence[FeedEntry], str | None]:
        """A marker without a page: read from page 1 until the entry; all of it if never found."""
        first = self._first_page(category)
        current = first
        while True:
            after = _after(current, entry_id)
            if after is not None:
                return current, after, None
            following = _page_of(current.next_archive) if current.next_archive else None
            nxt = self._page(category, following) if following else None
            if nxt is None:
                break
            current = nxt
        note = f"entry {entry_id} not found in the feed; resumed from page 1"
        return first, first.entries, note

    # --- fetching -------------------------------------------------------------------------------

    def _latest(self, category: str) -> int:
        """The number of the publisher's last page (``recent``'s via link; 0 when empty)."""
        recent = self._recent[category] = self._fetch(category, "recent")
        number = recent.page_number
        return number if number is not None else _MAX_PAGE_NUMBER

    def _page_or_beyond(self, category: str, number: int) -> FeedPage | None:
        """Page ``number``, or None when it does not exist, even if the publisher says so with
        a 500 (Java OpenMRS does for pages past the last one, and for page 1 of an empty feed)."""
        try:
            return self._page(category, number)
        except ServerUnavailable:
            if number > self._latest(category):
                return None
            raise

    def _page(self, category: str, number: int) -> FeedPage | None:
        """Page ``number``; None when the publisher has no such page (404)."""
        if not 1 <= number <= _MAX_PAGE_NUMBER:
            return None
        try:
            return self._fetch(category, str(number))
        except RecordError:
            return None

    def _fetch(self, category: str, which: str) -> FeedPage:
        """Fetch and parse one page; 404/4xx raise RecordError subclasses (callers decide)."""
        url = f"{self.base_url}/ws/atomfeed/{category}/{which}"
        self.requests += 1
        response = request(self._http, "GET", url, headers={"Accept": ATOM_ACCEPT})
        error = error_for_response(response)
        if error is not None:
            if response.status_code == 404 and which == "recent":
                raise FeedNotFound(
                    f"{category} feed: {url} answered 404: the parent publishes no such feed "
                    f"(check general.parentFeedLocation, or disable {category} in pull.classes)"
                )
            if isinstance(error, RecordError) and which == "recent":
                raise MalformedFeed(f"{category} feed: recent answered {response.status_code}")
            raise error
        return parse_page(response.content, url=url)

    def _number(self, page: FeedPage, fallback: int | None) -> int | None:
        return page.page_number if page.page_number is not None else fallback


def _search_order(page: int, latest: int) -> Iterator[int]:
    """The pages to look on for an entry that is not on ``page``: its neighbours (a Java
    publisher's pages shift by one when its chunking changes), then every other page from the
    last one down. When the publisher's pages got bigger, the entry is on an EARLIER page, and
    resuming from a page number would skip the entries after it on that page; a child that was
    up to date finds it within a few pages of the end. Nothing is searched when the last page
    has no number."""
    if latest >= _MAX_PAGE_NUMBER:
        return
    near = (page - 1, page + 1)
    yield from (n for n in near if 1 <= n <= latest)
    yield from (n for n in range(latest, 0, -1) if n != page and n not in near)


def _after(page: FeedPage, entry_id: str) -> Sequence[FeedEntry] | None:
    """The entries after ``entry_id`` on ``page``, or None when it is not there."""
    for index, entry in enumerate(page.entries):
        if entry.entry_id == entry_id:
            return page.entries[index + 1 :]
    return None


def _page_of(url: str | None) -> int | None:
    """The page number at the end of a ``via``/``next-archive`` link."""
    if not url:
        return None
    last = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    # isascii: isdigit() also accepts "²", which int() refuses (a hostile or broken feed).
    return int(last) if last.isascii() and last.isdigit() else None
