"""Lag per category: events the parent's feed has that this node has not pulled yet, and local
events not pushed yet.

The parent's side costs one request: a fhirsync parent answers ``/ws/rest/sync2/feedstate`` with
the distance from each marker to its feed's end. A Java OpenMRS parent has no such endpoint (404),
so each category's ``recent`` page is read instead: exact when the marker is on that page, a lower
bound ("at least") otherwise. Timeouts are short and answers are cached briefly, so a dashboard
never hangs on a parent that is down; it shows "unreachable" instead.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
import orjson

from fhirsync import categories
from fhirsync.clients.http import error_for_response, make_http_client, request, status_of
from fhirsync.errors import (
    AuthError,
    FhirsyncError,
    RecordNotFound,
    RequestTimeout,
    TransientError,
)
from fhirsync.feed.parse import parse_page
from fhirsync.settings import NodeConfig
from fhirsync.store import backlog, markers
from fhirsync.store.engine import Database
from fhirsync.store.markers import Marker
from fhirsync.store.outbox import PULLED_VIA
from fhirsync.sync.push_context import PUSH_FEED_PREFIX

CACHE_SECONDS = 20.0
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 3.0
FEEDSTATE_PATH = "/ws/rest/sync2/feedstate"
_NO_FEEDSTATE = (400, 404, 405, 500, 501)
"""Answers of a parent without fhirsync's feedstate (OpenMRS, with or without its Sync 2.0
module): its recent pages are read instead. Refused credentials and an unavailable parent are
errors as before."""


@dataclass(frozen=True, slots=True)
class CategoryLag:
    """How far one category is behind."""

    category: str
    behind_parent: int | None
    """Events on the parent after this node's marker; None when unknown."""
    exact: bool = True
    """False when ``behind_parent`` is a lower bound (Java parent, marker on an older page)."""
    unpushed: int | None = None
    """Local events a push would still send; None when push does not cover the category."""
    pulled: bool = True
    """False when pull does not cover the category (only push does)."""

    @property
    def parent_text(self) -> str:
        """The parent lag in words (a number, "at least N" or "unknown")."""
        if self.behind_parent is None:
            return "unknown"
        return str(self.behind_parent) if self.exact else f"at least {self.behind_parent}"


@dataclass(frozen=True, slots=True)
class Lag:
    """Lag of every pulled or pushed category, and whether the parent could be asked."""

    categories: list[CategoryLag] = field(default_factory=list)
    parent_error: str | None = None
    """Why the parent's side is unknown ("unreachable: ..." or "credentials refused: ..."), or
    None."""
    source: str | None = None
    """How the parent's side was learnt: "feedstate", "recent pages" or None."""

    @property
    def parent_label(self) -> str | None:
        """The short reason for a table cell ("unreachable", "credentials refused"), or None."""
        return self.parent_error.split(":", 1)[0] if self.parent_error else None


@dataclass(frozen=True, slots=True)
class ParentStatus:
    """Whether the parent answered ``/health`` (None: no parent), and why not in a few words."""

    url: str | None
    reachable: bool | None
    reason: str = ""

    @property
    def message(self) -> str:
        """The status as a sentence (the dashboard's)."""
        if self.url is None:
            return "No parent configured: this node is at the top of its tree."
        if self.reachable:
            return "Reachable."
        return f"{self.reason[:1].upper()}{self.reason[1:]}."


def check_parent(config: NodeConfig, *, timeout: float) -> ParentStatus:
    """GET the parent's ``/health`` (no credentials; sync's TLS trust) within ``timeout``.

    OpenMRS itself has no ``/health`` (it answers 404, or a redirect to its login page): then
    one of the parent's feeds is asked instead (with this node's credentials), so a Java parent
    counts as reachable and a wrong ``parentFeedLocation`` is named as such."""
    url = config.parent_url
    if url is None:
        return ParentStatus(None, None)
    try:
        status = status_of(url, "/health", timeout=timeout, ca_file=config.parent_ca_path)
        if status not in (200, 503):  # 503: a fhirsync parent whose database is down
            feed = f"/ws/atomfeed/{(_pulled(config) or ['patient'])[0]}/recent"
            status = status_of(
                url, feed, timeout=timeout, auth=config.parent_auth, ca_file=config.parent_ca_path
            )
            return _feed_answer(url, status)
    except RequestTimeout:
        return ParentStatus(url, False, f"no answer within {timeout:g} seconds")
    except TransientError as exc:
        return ParentStatus(url, False, str(exc))  # "cannot reach ...: Connection refused"
    if status == 200:
        return ParentStatus(url, True)
    return ParentStatus(url, False, f"HTTP {status}")


def _feed_answer(url: str, status: int) -> ParentStatus:
    """Reachability from a feed's status: a server that serves (or guards) sync feeds is up."""
    if status == 404:
        return ParentStatus(
            url,
            False,
            f"no sync feeds at {url}/ws/atomfeed/ (HTTP 404): check general.parentFeedLocation",
        )
    # 401/403: up, refusing the credentials (the lag check says so); 500: OpenMRS's answer for
    # an empty feed's recent page (spec §13).
    if status < 300 or status in (401, 403, 500):
        return ParentStatus(url, True)
    return ParentStatus(url, False, f"HTTP {status}")


CREDENTIALS_REFUSED = "credentials refused"

_cache: dict[tuple[object, ...], tuple[float, tuple[dict[str, tuple[int | None, bool]], str]]] = {}
_cache_lock = threading.Lock()


def _pulled(config: NodeConfig) -> list[str]:
    return [c.category.lower() for c in config.sync2.pull.classes if c.enabled]


def _pushed(config: NodeConfig) -> list[str]:
    out = []
    for c in config.sync2.push.classes:
        found = categories.find(c.category)
        if c.enabled and found is not None and not found.is_subresource:
            out.append(found.name)
    return out


def unpushed(config: NodeConfig, db: Database) -> dict[str, int]:
    """Category → local events after the push marker that a push would send."""
    parent = config.parent_url
    if parent is None:
        return {}
    with db.read() as conn:
        marks = markers.for_feed(conn, PUSH_FEED_PREFIX + parent)
        return {
            name: backlog.relayable_after(
                conn, name, (marks.get(name) or markers.EMPTY).last_page or 0, PULLED_VIA
            )
            for name in _pushed(config)
        }


def _ask_feedstate(
    config: NodeConfig, marks: dict[str, Marker], names: list[str]
) -> tuple[dict[str, tuple[int | None, bool]], str]:
    """Per category (events behind, exact) and the source: feedstate, or recent pages (Java)."""
    assert config.parent_url is not None
    with make_http_client(
        config.parent_url,
        config.parent_auth,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        pool_size=1,
        ca_file=config.parent_ca_path,
    ) as http:
        params = [
            ("position", f"{n}:{(marks.get(n) or markers.EMPTY).last_entry_id or ''}")
            for n in names
        ]
        response = request(http, "GET", FEEDSTATE_PATH + "?" + urlencode(params))
        if response.status_code in _NO_FEEDSTATE:
            return _from_recent_pages(http, marks, names), "recent pages"
        error = error_for_response(response)
        if error is not None:
            raise error
        try:
            answer = orjson.loads(response.content)["categories"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise RecordNotFound("the parent's feedstate answer is not understood") from exc
    out: dict[str, tuple[int | None, bool]] = {}
    for name in names:
        item = answer.get(name) or {"behind": 0}
        behind = item.get("behind")
        if behind is None and not (marks.get(name) or markers.EMPTY).last_entry_id:
            behind = item.get("latest", 0)
        out[name] = (int(behind) if behind is not None else None, True)
    return out, "feedstate"


def _from_recent_pages(
    http: httpx.Client, marks: dict[str, Marker], names: list[str]
) -> dict[str, tuple[int | None, bool]]:
    """Java parents: one ``recent`` page per category."""
    out: dict[str, tuple[int | None, bool]] = {}
    for name in names:
        url = f"/ws/atomfeed/{name}/recent"
        response = request(http, "GET", url, headers={"Accept": "application/atom+xml"})
        error = error_for_response(response)
        if error is not None:
            # OpenMRS answers 500 for an empty feed's recent page (spec §13): nothing to pull.
            out[name] = (0, True) if response.status_code >= 500 else (None, False)
            continue
        page = parse_page(response.content, url=str(response.url))
        ids = [e.entry_id for e in page.entries]
        mark = marks.get(name) or markers.EMPTY
        if mark.last_entry_id in ids:
            out[name] = (len(ids) - ids.index(mark.last_entry_id) - 1, True)
        else:
            exact = (page.page_number or 1) <= 1 and mark.last_entry_id is None
            out[name] = (len(ids), exact)
    return out


def parent_lag(config: NodeConfig, db: Database) -> tuple[dict[str, tuple[int | None, bool]], str]:
    """Category → (events behind, exact) on the parent, and how it was learnt (cached briefly).

    Raises fhirsync errors (TransientError when the parent is down, AuthError when refused).
    """
    parent = config.parent_url
    names = _pulled(config)
    if parent is None or not names:
        return {}, "none"
    with db.read() as conn:
        marks = markers.for_feed(conn, parent)
    key = (parent, tuple((n, (marks.get(n) or markers.EMPTY).last_entry_id) for n in names))
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = _ask_feedstate(config, marks, names)
    with _cache_lock:
        _cache.clear()  # one parent per node: only the newest answer is worth keeping
        _cache[key] = (time.monotonic(), value)
    return value


def gather(config: NodeConfig, db: Database, *, ask_parent: bool = True) -> Lag:
    """Lag of every pulled and pushed category; the parent's side is None when unreachable.

    ``ask_parent=False`` (the caller already knows the parent is down) skips the parent's side.
    """
    local = unpushed(config, db)
    remote: dict[str, tuple[int | None, bool]] = {}
    error: str | None = None
    source: str | None = None
    if config.parent_url is None:
        pass
    elif not ask_parent:
        error = "unreachable: the parent did not answer"
    else:
        try:
            remote, source = parent_lag(config, db)
        except AuthError as exc:
            error = f"{CREDENTIALS_REFUSED}: {exc.message}"
        except FhirsyncError as exc:
            error = f"unreachable: {exc.message}"
    names = list(dict.fromkeys([*_pulled(config), *local]))
    pulled = set(_pulled(config))
    rows = [
        CategoryLag(
            name,
            remote.get(name, (None, True))[0],
            remote.get(name, (None, True))[1],
            local.get(name),
            name in pulled,
        )
        for name in names
    ]
    return Lag(rows, error, source)


def clear_cache() -> None:
    """Forget cached parent answers (after a pull moved the markers anyway; and for tests)."""
    with _cache_lock:
        _cache.clear()
