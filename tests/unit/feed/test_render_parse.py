"""Feed pages: the exact OpenMRS shape (spec §3.5), and parsing of ours and Java-style pages."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from lxml import etree

from fhirsync.errors import MalformedFeed
from fhirsync.feed.parse import parse_page
from fhirsync.feed.render import PageLinks, render_page
from fhirsync.records import ChangeEvent

NS = {"a": "http://www.w3.org/2005/Atom", "fs": "urn:fhirsync:atom"}
T0 = datetime(2019, 2, 18, 10, 11, 12, 345000, tzinfo=UTC)
SERVICE = "http://parent:8081/ws/atomfeed/patient"


def _event(i: int, action: str = "CREATED", category: str = "patient") -> ChangeEvent:
    return ChangeEvent(i, category, f"rec-{i}", f"evt-{i}", action, T0, "origin-node")  # type: ignore[arg-type]


def _render(page: int, latest: int, n: int = 2) -> etree._Element:
    links = PageLinks(f"{SERVICE}/recent", SERVICE, page, latest)
    return etree.fromstring(render_page([_event(i) for i in range(1, n + 1)], links))


def test_page_has_the_openmrs_element_order_and_values() -> None:
    feed = _render(page=3, latest=3)
    tags = [etree.QName(child).localname for child in feed]
    assert tags[:9] == [
        "title",
        "link",
        "link",
        "link",
        "author",
        "id",
        "generator",
        "updated",
        "entry",
    ]
    assert feed.findtext("a:title", namespaces=NS) == "OpenMRS Feed Publisher for Sync2.0"
    rels = [
        (link.get("rel"), link.get("href"), link.get("type")) for link in feed.findall("a:link", NS)
    ]
    assert rels == [
        ("self", f"{SERVICE}/recent", "application/atom+xml"),
        ("via", f"{SERVICE}/3", "application/atom+xml"),
        ("prev-archive", f"{SERVICE}/2", "application/atom+xml"),
    ]
    assert feed.findtext("a:author/a:name", namespaces=NS) == "SolDevelo"
    assert feed.findtext("a:id", namespaces=NS) == "a2ad93fd-8a7f-405f-bbc1-da4535e6d05c+3"
    assert feed.find("a:generator", NS).get("uri") == "https://github.com/ICT4H/atomfeed"
    assert feed.findtext("a:updated", namespaces=NS) == "2019-02-18T10:11:12Z"


def test_entry_shape() -> None:
    entry = _render(page=1, latest=1).find("a:entry", NS)
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
    assert entry.findtext("a:title", namespaces=NS) == "Patient"
    assert [c.get("term") for c in entry.findall("a:category", NS)] == ["CREATED", "patient"]
    assert entry.findtext("a:id", namespaces=NS) == "tag:atomfeed.ict4h.org:evt-1"
    assert entry.findtext("a:published", namespaces=NS) == "2019-02-18T10:11:12Z"
    content = entry.find("a:content", NS)
    assert content.get("type") == "application/vnd.atomfeed+xml"
    assert orjson.loads(content.text) == {"fhir": "/ws/fhir2/R4/Patient/rec-1"}
    assert entry.findtext("fs:origin", namespaces=NS) == "origin-node"


def test_cdata_is_used_for_content() -> None:
    links = PageLinks(f"{SERVICE}/1", SERVICE, 1, 1)
    assert b"<![CDATA[{" in render_page([_event(1)], links)


def test_first_and_middle_pages_link_both_ways() -> None:
    first = {link.get("rel") for link in _render(1, 3).findall("a:link", NS)}
    middle = {link.get("rel") for link in _render(2, 3).findall("a:link", NS)}
    assert first == {"self", "via", "next-archive"}
    assert middle == {"self", "via", "next-archive", "prev-archive"}


def test_round_trip() -> None:
    links = PageLinks(f"{SERVICE}/2", SERVICE, 2, 3)
    events = [_event(1), _event(2, "VOIDED"), _event(3, "UNRETIRED", "concept")]
    page = parse_page(render_page(events, links), url=f"{SERVICE}/2")
    assert page.page_number == 2
    assert page.next_archive == f"{SERVICE}/3"
    assert page.prev_archive == f"{SERVICE}/1"
    assert [(e.entry_id, e.action, e.category, e.origin) for e in page.entries] == [
        ("tag:atomfeed.ict4h.org:evt-1", "CREATED", "patient", "origin-node"),
        ("tag:atomfeed.ict4h.org:evt-2", "VOIDED", "patient", "origin-node"),
        ("tag:atomfeed.ict4h.org:evt-3", "UNRETIRED", "concept", "origin-node"),
    ]
    assert page.entries[2].links == {"rest": "/ws/rest/v1/concept/rec-3?v=full"}


FILTER = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><feedFilter><beanName>'
    "atomfeed.locationFeedFilterStrategy</beanName><filter>Kenya%Nairobi%null%null%null"
    "</filter></feedFilter>"
)


def _java_page(entries: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>OpenMRS Feed Publisher for Sync2.0</title>
  <link rel="self" type="application/atom+xml" href="http://java:8080/openmrs/ws/atomfeed/person_name/recent" />
  <link rel="via" type="application/atom+xml" href="http://java:8080/openmrs/ws/atomfeed/person_name/7" />
  <link rel="prev-archive" type="application/atom+xml" href="http://java:8080/openmrs/ws/atomfeed/person_name/6" />
  <author><name>SolDevelo</name></author>
  <id>a2ad93fd-8a7f-405f-bbc1-da4535e6d05c+7</id>
  <updated>2019-02-18T10:11:12Z</updated>
  {entries}
</feed>""".encode()


def test_java_page_with_shuffled_terms_filters_and_old_links() -> None:
    person = "5946f880-b197-400b-9caa-a3c661d23041"
    name = "9d9fcb4e-8ccd-4f20-bb2c-a0a2ad6c4a10"
    links = (
        f'{{"rest":"/ws/rest/v1/person/{person}/name/{name}?v=full",'
        f'"fhir":"/ws/fhir/Person/{person}"}}'
    )
    entries = f"""
  <entry><title>Person Name</title>
    <category term="person_name" /><category term="{FILTER.replace('"', "&quot;").replace("<", "&lt;")}" /><category term="UPDATED" />
    <id>tag:atomfeed.ict4h.org:aaa</id><updated>2019-02-18T10:11:12Z</updated>
    <content type="application/vnd.atomfeed+xml"><![CDATA[{links}]]></content></entry>
  <entry><title>Person Name</title>
    <category term="CREATED" /><category term="person_name" />
    <id>tag:atomfeed.ict4h.org:bbb</id><updated>2019-02-18T10:11:13Z</updated>
    <content type="application/vnd.atomfeed+xml">{links.replace('"', "&quot;")}</content></entry>"""
    page = parse_page(_java_page(entries), url="http://java/ws/atomfeed/person_name/7")
    assert page.page_number == 7
    assert page.next_archive is None
    first, second = page.entries
    assert (first.action, first.category, first.origin) == ("UPDATED", "person_name", None)
    assert len(first.filter_tags) == 1 and "locationFeedFilterStrategy" in first.filter_tags[0]
    assert first.links["fhir"] == f"/ws/fhir/Person/{person}"
    assert second.links == first.links
    assert second.filter_tags == ()


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ('<entry><id>x</id><category term="patient"/><content>{}</content></entry>', "no action"),
        ('<entry><id>x</id><category term="CREATED"/><content>{}</content></entry>', "no category"),
        ('<entry><category term="CREATED"/><category term="patient"/></entry>', "no id"),
        (
            '<entry><id>x</id><category term="CREATED"/><category term="patient"/>'
            "<content>not json</content></entry>",
            "not JSON",
        ),
        (
            '<entry><id>x</id><category term="CREATED"/><category term="patient"/>'
            '<content>["a"]</content></entry>',
            "not a JSON object",
        ),
    ],
)
def test_malformed_entries_name_the_url(entries: str, needle: str) -> None:
    with pytest.raises(MalformedFeed) as info:
        parse_page(_java_page(entries), url="http://java/feed/7")
    assert needle in str(info.value)
    assert "http://java/feed/7" in str(info.value)


def test_non_xml_and_non_atom_are_malformed() -> None:
    with pytest.raises(MalformedFeed):
        parse_page(b"<feed", url="u")
    with pytest.raises(MalformedFeed):
        parse_page(b"<html/>", url="u")
