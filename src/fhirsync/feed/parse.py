"""Atom pages → FeedPage, for fhirsync feeds and feeds published by Java OpenMRS (spec §3.5, §4.3).

Java pages differ from ours in ways the parser must absorb: category terms in any order (a hash
set), content with or without CDATA, links maps in any key order, old ``/ws/fhir/`` links, and
``<feedFilter>`` XML documents as extra terms.
"""

from __future__ import annotations

from datetime import datetime

import orjson
from lxml import etree

from fhirsync.categories import ACTIONS
from fhirsync.errors import MalformedFeed
from fhirsync.records import FeedEntry, FeedPage

_A = "{http://www.w3.org/2005/Atom}"
_FS_ORIGIN = "{urn:fhirsync:atom}origin"
_CATEGORY, _ID, _CONTENT = _A + "category", _A + "id", _A + "content"
_UPDATED, _TITLE = _A + "updated", _A + "title"
# No entity expansion, no network, libxml2's default size limits: the page comes from another
# machine, and a feed page never needs more.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
_CDATA_OPEN = "<![CDATA["
_CDATA_CLOSE = "]]>"


def _is_filter(term: str) -> bool:
    # Cheaper than parsing the term: a category name never starts with "<" (spec §3.6).
    return term.startswith("<") and "<feedFilter" in term


def _page_number(url: str | None) -> int | None:
    if not url:
        return None
    last = url.rstrip("/").rsplit("/", 1)[-1]
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
    return int(last) if last.isascii() and last.isdigit() else None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def _links(raw: str, url: str, entry_id: str) -> dict[str, str]:
    text = raw.strip()
    if text.startswith(_CDATA_OPEN) and text.endswith(_CDATA_CLOSE):
        text = text[len(_CDATA_OPEN) : -len(_CDATA_CLOSE)].strip()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedFeed(f"{url}: entry {entry_id}: content is not JSON") from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise MalformedFeed(f"{url}: entry {entry_id}: content is not a JSON object of links")
    return value


def _entry(node: etree._Element, url: str) -> FeedEntry:
    entry_id = ""
    action: str | None = None
    category: str | None = None
    filters: list[str] = []
    content = ""
    origin: str | None = None
    updated: str | None = None
    title: str | None = None
    # One pass over the children: pages of 1000 entries are on the pull hot path.
    for child in node.iterchildren():
        tag = child.tag
        if tag == _CATEGORY:
            term = (child.get("term") or "").strip()
            if term in ACTIONS:
                action = action or term
            elif _is_filter(term):
                filters.append(term)
            elif term and category is None:
                category = term.lower()
        elif tag == _ID:
            entry_id = (child.text or "").strip()
        elif tag == _CONTENT:
            content = child.text or ""
        elif tag == _UPDATED:
            updated = child.text
        elif tag == _TITLE:
            title = child.text
        elif tag == _FS_ORIGIN:
            origin = (child.text or "").strip() or None
    if not entry_id:
        raise MalformedFeed(f"{url}: an entry has no id")
    if action is None or category is None:
        missing = "action" if action is None else "category"
        raise MalformedFeed(f"{url}: entry {entry_id} has no {missing} term")
    return FeedEntry(
        entry_id=entry_id,
        category=category,
        action=action,  # type: ignore[arg-type]
        links=_links(content, url, entry_id),
        updated=_time(updated),
        title=title,
        origin=origin,
        filter_tags=tuple(filters),
    )


def parse_page(data: bytes, *, url: str) -> FeedPage:
    """Parse one Atom page; MalformedFeed names the URL (and entry) when it cannot be used."""
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise MalformedFeed(f"{url}: not well-formed XML: {exc}") from exc
    if root.tag != _A + "feed":
        raise MalformedFeed(f"{url}: not an Atom feed (root element {root.tag!r})")
    rels: dict[str, str] = {}
    for link in root.iterfind(_A + "link"):
        rel, href = link.get("rel"), link.get("href")
        if rel and href and rel not in rels:
            rels[rel] = href
    via = rels.get("via")
    return FeedPage(
        self_url=rels.get("self", url),
        via_url=via,
        page_number=_page_number(via),
        prev_archive=rels.get("prev-archive"),
        next_archive=rels.get("next-archive"),
        entries=tuple(_entry(node, url) for node in root.iterfind(_A + "entry")),
    )
