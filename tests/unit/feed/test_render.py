"""render_page: the exact OpenMRS page shape of spec §3.5, checked element by element with lxml."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import feedparser
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from fhirsync.feed.parse import parse_page
from fhirsync.feed.render import PageLinks, atom_time, render_page
from fhirsync.records import ChangeEvent

NS = {"a": "http://www.w3.org/2005/Atom", "fs": "urn:fhirsync:atom"}
T0 = datetime(2019, 2, 18, 10, 11, 12, 345000, tzinfo=UTC)
SERVICE = "http://parent:8081/ws/atomfeed/patient"
ACTIONS = ("CREATED", "UPDATED", "VOIDED", "UNVOIDED", "RETIRED", "UNRETIRED", "DELETED")


def _event(
    i: int,
    action: str = "CREATED",
    category: str = "patient",
    *,
    when: datetime = T0,
    origin: str = "origin-node",
    record: str | None = None,
) -> ChangeEvent:
    return ChangeEvent(
        seq=i,
        category=category,
        record_uuid=record or f"rec-{i}",
        event_uuid=f"evt-{i}",
        action=action,  # type: ignore[arg-type]
        timestamp=when,
        origin=origin,
    )


def _render(page: int, latest: int, events: list[ChangeEvent] | None = None) -> etree._Element:
    links = PageLinks(f"{SERVICE}/recent", SERVICE, page, latest)
    if events is None:
        events = [_event(1), _event(2)]
    return etree.fromstring(render_page(events, links))


def _shape(feed: etree._Element) -> list[str]:
    """Children of the feed as ``name`` or ``link:rel``."""
    out = []
    for child in feed:
        name = etree.QName(child).localname
        out.append(f"link:{child.get('rel')}" if name == "link" else name)
    return out


def test_middle_page_has_every_element_in_openmrs_order() -> None:
    feed = _render(page=2, latest=3)
    assert etree.QName(feed).namespace == NS["a"]
    assert _shape(feed) == [
        "title",
        "link:self",
        "link:via",
        "link:next-archive",
        "link:prev-archive",
        "author",
        "id",
        "generator",
        "updated",
        "entry",
        "entry",
    ]
    assert feed.xpath("string(a:title)", namespaces=NS) == "OpenMRS Feed Publisher for Sync2.0"
    assert feed.xpath("a:link/@type", namespaces=NS) == ["application/atom+xml"] * 4
    assert feed.xpath("a:link/@href", namespaces=NS) == [
        f"{SERVICE}/recent",
        f"{SERVICE}/2",
        f"{SERVICE}/3",
        f"{SERVICE}/1",
    ]
    assert feed.xpath("string(a:author/a:name)", namespaces=NS) == "SolDevelo"
    assert feed.xpath("string(a:id)", namespaces=NS) == "a2ad93fd-8a7f-405f-bbc1-da4535e6d05c+2"
    assert feed.xpath("string(a:generator/@uri)", namespaces=NS) == (
        "https://github.com/ICT4H/atomfeed"
    )
    assert feed.xpath("string(a:generator)", namespaces=NS) == "OpenMRS Feed Publisher"
    assert feed.xpath("string(a:updated)", namespaces=NS) == "2019-02-18T10:11:12Z"


def test_archive_links_only_where_pages_exist() -> None:
    assert _shape(_render(1, 1))[:4] == ["title", "link:self", "link:via", "author"]
    assert _shape(_render(1, 3))[:5] == [
        "title",
        "link:self",
        "link:via",
        "link:next-archive",
        "author",
    ]
    last = _render(3, 3)
    assert _shape(last)[:5] == ["title", "link:self", "link:via", "link:prev-archive", "author"]
    # recent: self is the URL asked for, via names the page number (spec §3.5 worked example).
    assert last.xpath("a:link[@rel='via']/@href", namespaces=NS) == [f"{SERVICE}/3"]
    assert last.xpath("a:link[@rel='prev-archive']/@href", namespaces=NS) == [f"{SERVICE}/2"]


def test_entry_elements_in_order_with_action_term_first() -> None:
    entry = _render(1, 1).find("a:entry", NS)
    assert entry is not None
    assert [etree.QName(c).localname for c in entry] == [
        "title",
        "category",
        "category",
        "id",
        "updated",
        "published",
        "content",
        "origin",
    ]
    assert entry.xpath("string(a:title)", namespaces=NS) == "Patient"
    assert entry.xpath("a:category/@term", namespaces=NS) == ["CREATED", "patient"]
    assert entry.xpath("string(a:id)", namespaces=NS) == "tag:atomfeed.ict4h.org:evt-1"
    assert entry.xpath("string(a:updated)", namespaces=NS) == "2019-02-18T10:11:12Z"
    assert entry.xpath("string(a:published)", namespaces=NS) == "2019-02-18T10:11:12Z"
    content = entry.find("a:content", NS)
    assert content is not None
    assert content.get("type") == "application/vnd.atomfeed+xml"
    assert orjson.loads(content.text or "") == {"fhir": "/ws/fhir2/R4/Patient/rec-1"}
    origin = entry.find("fs:origin", NS)
    assert origin is not None and origin.text == "origin-node"


def test_content_is_cdata_and_the_extension_namespace_is_declared_once() -> None:
    data = render_page([_event(1), _event(2)], PageLinks(f"{SERVICE}/1", SERVICE, 1, 1))
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b'<![CDATA[{"fhir":"/ws/fhir2/R4/Patient/rec-1"}]]>' in data
    assert data.count(b"urn:fhirsync:atom") == 1


def test_links_follow_the_category_table() -> None:
    events = [
        _event(1, "RETIRED", "concept"),
        _event(2, "UPDATED", "visit"),
        _event(3, "CREATED", "provider"),
        _event(4, "DELETED", "spaceship"),
    ]
    feed = _render(1, 1, events)
    entries = feed.findall("a:entry", NS)
    contents = [orjson.loads(e.findtext("a:content", namespaces=NS) or "") for e in entries]
    assert contents == [
        {"rest": "/ws/rest/v1/concept/rec-1?v=full"},
        {"fhir": "/ws/fhir2/R4/Encounter/rec-2"},
        {"fhir": "/ws/fhir2/R4/Practitioner/rec-3"},
        {},
    ]
    titles = feed.xpath("a:entry/a:title/text()", namespaces=NS)
    assert titles == ["Concept", "Visit", "Provider", "spaceship"]
    terms = [e.xpath("a:category/@term", namespaces=NS) for e in feed.findall("a:entry", NS)]
    assert terms == [
        ["RETIRED", "concept"],
        ["UPDATED", "visit"],
        ["CREATED", "provider"],
        ["DELETED", "spaceship"],
    ]


def test_times_are_utc_with_second_precision_and_updated_is_the_newest() -> None:
    plus_two = timezone(timedelta(hours=2))
    events = [
        _event(1, when=datetime(2020, 5, 1, 12, 0, 0, 999999, tzinfo=plus_two)),
        _event(2, when=datetime(2020, 5, 1, 11, 30, 5, tzinfo=UTC)),
    ]
    feed = _render(1, 1, events)
    assert feed.xpath("a:entry/a:published/text()", namespaces=NS) == [
        "2020-05-01T10:00:00Z",
        "2020-05-01T11:30:05Z",
    ]
    assert feed.xpath("string(a:updated)", namespaces=NS) == "2020-05-01T11:30:05Z"
    assert atom_time(datetime(2019, 2, 18, 10, 11, 12, tzinfo=UTC)) == "2019-02-18T10:11:12Z"


def test_an_empty_page_is_a_valid_feed_dated_today() -> None:
    data = render_page([], PageLinks(f"{SERVICE}/recent", SERVICE, 1, 1))
    feed = etree.fromstring(data)
    assert feed.findall("a:entry", NS) == []
    today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    assert feed.xpath("string(a:updated)", namespaces=NS) == today
    parsed = feedparser.parse(data)
    assert not parsed.bozo and parsed.entries == []


def test_markup_in_values_is_escaped() -> None:
    nasty = 'a&b<c>"d"]]>e\x01'
    events = [_event(1, origin=nasty, record=nasty)]
    links = PageLinks(f"{SERVICE}/1?x=<&y>", SERVICE, 1, 1)
    feed = etree.fromstring(render_page(events, links))
    assert feed.xpath("string(a:link[@rel='self']/@href)", namespaces=NS) == f"{SERVICE}/1?x=<&y>"
    entry = feed.find("a:entry", NS)
    assert entry is not None
    # The control character cannot exist in XML 1.0 and is replaced; the rest round-trips.
    assert entry.findtext("fs:origin", namespaces=NS) == 'a&b<c>"d"]]>e\ufffd'
    links_json = orjson.loads(entry.findtext("a:content", namespaces=NS) or "")
    # JSON escapes the control character itself, so the link survives exactly.
    assert links_json == {"fhir": f"/ws/fhir2/R4/Patient/{nasty}"}


def test_feedparser_reads_a_rendered_page() -> None:
    events = [_event(i, ACTIONS[i % 7]) for i in range(1, 8)]
    data = render_page(events, PageLinks(f"{SERVICE}/2", SERVICE, 2, 3))
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.feed.title == "OpenMRS Feed Publisher for Sync2.0"
    rels = {link["rel"]: link["href"] for link in parsed.feed.links}
    assert rels == {
        "self": f"{SERVICE}/2",
        "via": f"{SERVICE}/2",
        "next-archive": f"{SERVICE}/3",
        "prev-archive": f"{SERVICE}/1",
    }
    assert [e.id for e in parsed.entries] == [
        f"tag:atomfeed.ict4h.org:evt-{i}" for i in range(1, 8)
    ]
    assert [e.tags[0]["term"] for e in parsed.entries] == [ACTIONS[i % 7] for i in range(1, 8)]
    assert parsed.entries[0].content[0]["type"] == "application/vnd.atomfeed+xml"


def test_round_trip_through_the_parser() -> None:
    events = [_event(i, action, "patient") for i, action in enumerate(ACTIONS, start=1)]
    events.append(_event(8, "UNRETIRED", "concept", origin="child-b"))
    data = render_page(events, PageLinks(f"{SERVICE}/2", SERVICE, 2, 3))
    page = parse_page(data, url=f"{SERVICE}/2")
    assert (page.self_url, page.via_url, page.page_number) == (f"{SERVICE}/2", f"{SERVICE}/2", 2)
    assert (page.prev_archive, page.next_archive) == (f"{SERVICE}/1", f"{SERVICE}/3")
    assert [(e.entry_id, e.action, e.category, e.origin) for e in page.entries] == [
        (ev.entry_id, ev.action, ev.category, ev.origin) for ev in events
    ]
    assert page.entries[0].links == {"fhir": "/ws/fhir2/R4/Patient/rec-1"}
    assert page.entries[7].links == {"rest": "/ws/rest/v1/concept/rec-8?v=full"}
    assert page.entries[0].updated == T0.replace(microsecond=0)
    assert page.entries[0].title == "Patient"
    assert all(e.filter_tags == () for e in page.entries)


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(origin=_TEXT, record=_TEXT, service=_TEXT)
def test_any_values_give_a_well_formed_page(origin: str, record: str, service: str) -> None:
    links = PageLinks(f"http://h/{service}/recent", f"http://h/{service}", 1, 2)
    data = render_page([_event(1, origin=origin, record=record)], links)
    page = parse_page(data, url="http://h/x")
    (entry,) = page.entries
    assert page.self_url.startswith("http://h/") and page.next_archive is not None
    # Values XML can carry come back unchanged.
    if all(c in {"\t", "\n"} or c >= " " for c in origin + record) and "\r" not in origin:
        assert entry.origin == (origin.strip() or None)
        assert entry.links == {"fhir": f"/ws/fhir2/R4/Patient/{record}"}
