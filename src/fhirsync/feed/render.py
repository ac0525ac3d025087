"""Events → one Atom page in exactly the shape OpenMRS's atomfeed module publishes (spec §3.5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from lxml import etree

from fhirsync import categories
from fhirsync.records import ChangeEvent

ATOM_NS = "http://www.w3.org/2005/Atom"
FS_NS = "urn:fhirsync:atom"
FEED_TITLE = "OpenMRS Feed Publisher for Sync2.0"
FEED_AUTHOR = "SolDevelo"
FEED_ID_PREFIX = "a2ad93fd-8a7f-405f-bbc1-da4535e6d05c"
GENERATOR_URI = "https://github.com/ICT4H/atomfeed"
GENERATOR_TITLE = "OpenMRS Feed Publisher"
ATOM_LINK_TYPE = "application/atom+xml"
CONTENT_TYPE = "application/vnd.atomfeed+xml"
_A = f"{{{ATOM_NS}}}"
_FS_ORIGIN = f"{{{FS_NS}}}origin"


@dataclass(frozen=True, slots=True)
class PageLinks:
    """The URLs a page links to: what was requested, and the service URI pages hang off."""

    self_url: str
    service_uri: str
    page: int
    latest_page: int


def atom_time(moment: datetime) -> str:
    """Atom date-time in UTC, second precision: ``2019-02-18T10:11:12Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _link(feed: etree._Element, rel: str, href: str) -> None:
    etree.SubElement(feed, _A + "link", rel=rel, type=ATOM_LINK_TYPE, href=href)


def _text(parent: etree._Element, tag: str, value: str) -> etree._Element:
    element = etree.SubElement(parent, _A + tag)
    element.text = value
    return element


def _entry(feed: etree._Element, event: ChangeEvent) -> None:
    category = categories.find(event.category)
    entry = etree.SubElement(feed, _A + "entry")
    _text(entry, "title", category.title if category else event.category)
    etree.SubElement(entry, _A + "category", term=event.action)
    etree.SubElement(entry, _A + "category", term=event.category)
    _text(entry, "id", event.entry_id)
    stamp = atom_time(event.timestamp)
    _text(entry, "updated", stamp)
    _text(entry, "published", stamp)
    links = category.links(event.record_uuid) if category else {}
    content = etree.SubElement(entry, _A + "content", type=CONTENT_TYPE)
    content.text = etree.CDATA(orjson.dumps(links).decode())
    origin = etree.SubElement(entry, _FS_ORIGIN)
    origin.text = event.origin


def render_page(events: Sequence[ChangeEvent], links: PageLinks) -> bytes:
    """One feed page as UTF-8 XML bytes; ``events`` oldest first."""
    # The extension namespace is declared once on the root, not on every entry.
    feed = etree.Element(_A + "feed", nsmap={None: ATOM_NS, "fs": FS_NS})  # type: ignore[dict-item]
    _text(feed, "title", FEED_TITLE)
    _link(feed, "self", links.self_url)
    _link(feed, "via", f"{links.service_uri}/{links.page}")
    if links.page < links.latest_page:
        _link(feed, "next-archive", f"{links.service_uri}/{links.page + 1}")
    if links.page > 1:
        _link(feed, "prev-archive", f"{links.service_uri}/{links.page - 1}")
    author = etree.SubElement(feed, _A + "author")
    _text(author, "name", FEED_AUTHOR)
    _text(feed, "id", f"{FEED_ID_PREFIX}+{links.page}")
    generator = _text(feed, "generator", GENERATOR_TITLE)
    generator.set("uri", GENERATOR_URI)
    if events:
        updated = max(e.timestamp for e in events)
    else:
        updated = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    _text(feed, "updated", atom_time(updated))
    for event in events:
        _entry(feed, event)
    xml: bytes = etree.tostring(feed, xml_declaration=True, encoding="UTF-8")
    return xml
