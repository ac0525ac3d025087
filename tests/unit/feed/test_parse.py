"""parse_page on hand-written pages in the shape Java OpenMRS publishes (spec §3.5, §3.6, §5.1).

Java pages differ from ours: page size 5, category terms in hash-set order, content with or
without CDATA, links maps in any key order, old ``/ws/fhir/`` links, sub-resource categories and
``<feedFilter>`` XML documents as terms.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import orjson
import pytest

from fhirsync.errors import MalformedFeed
from fhirsync.feed.parse import parse_page
from fhirsync.records import FeedEntry

JAVA = "http://java:8080/openmrs/ws/atomfeed"
FILTER = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><feedFilter><beanName>'
    "atomfeed.locationFeedFilterStrategy</beanName><filter>Kenya%Nairobi%null%null%null"
    "</filter></feedFilter>"
)
PERSON = "5946f880-b197-400b-9caa-a3c661d23041"


def _page(category: str, entries: str, *, page: int = 7, links: str | None = None) -> bytes:
    if links is None:
        links = (
            f'<link rel="self" type="application/atom+xml" href="{JAVA}/{category}/recent" />'
            f'<link rel="via" type="application/atom+xml" href="{JAVA}/{category}/{page}" />'
            f'<link rel="prev-archive" type="application/atom+xml" '
            f'href="{JAVA}/{category}/{page - 1}" />'
        )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>OpenMRS Feed Publisher for Sync2.0</title>
  {links}
  <author><name>SolDevelo</name></author>
  <id>a2ad93fd-8a7f-405f-bbc1-da4535e6d05c+{page}</id>
  <generator uri="https://github.com/ICT4H/atomfeed">OpenMRS Feed Publisher</generator>
  <updated>2019-02-18T10:11:14Z</updated>
  {entries}
</feed>""".encode()


def _entry(
    entry_id: str,
    terms: list[str],
    content: str,
    *,
    title: str = "Patient",
    updated: str = "2019-02-18T10:11:12Z",
) -> str:
    categories = "".join(f"<category term={quoteattr(t)} />" for t in terms)
    return (
        f"<entry><title>{escape(title)}</title>{categories}"
        f"<id>tag:atomfeed.ict4h.org:{entry_id}</id>"
        f"<updated>{updated}</updated><published>{updated}</published>"
        f'<content type="application/vnd.atomfeed+xml">{content}</content></entry>'
    )


def _cdata(links: dict[str, str]) -> str:
    return f"<![CDATA[{orjson.dumps(links).decode()}]]>"


def _parse_one(terms: list[str], content: str) -> FeedEntry:
    (entry,) = parse_page(_page("patient", _entry("e1", terms, content)), url="u").entries
    return entry


def test_a_java_page_with_five_entries() -> None:
    uuids = [f"7a3b{i}000-0000-4000-8000-000000000000" for i in range(5)]
    entries = "".join(
        _entry(
            f"id-{i}",
            ["patient", "UPDATED"] if i % 2 else ["CREATED", "patient"],
            _cdata({"rest": f"/ws/rest/v1/patient/{u}?v=full", "fhir": f"/ws/fhir/Patient/{u}"}),
            updated=f"2019-02-18T10:11:1{i}Z",
        )
        for i, u in enumerate(uuids)
    )
    page = parse_page(_page("patient", entries, page=3), url=f"{JAVA}/patient/recent")
    assert page.self_url == f"{JAVA}/patient/recent"
    assert page.via_url == f"{JAVA}/patient/3"
    assert page.page_number == 3
    assert page.prev_archive == f"{JAVA}/patient/2"
    assert page.next_archive is None
    assert [e.entry_id for e in page.entries] == [
        f"tag:atomfeed.ict4h.org:id-{i}" for i in range(5)
    ]
    assert [e.action for e in page.entries] == [
        "CREATED",
        "UPDATED",
        "CREATED",
        "UPDATED",
        "CREATED",
    ]
    assert {e.category for e in page.entries} == {"patient"}
    # Old FHIR links are kept exactly as the publisher wrote them.
    assert page.entries[0].links == {
        "fhir": f"/ws/fhir/Patient/{uuids[0]}",
        "rest": f"/ws/rest/v1/patient/{uuids[0]}?v=full",
    }
    assert page.entries[4].updated == datetime(2019, 2, 18, 10, 11, 14, tzinfo=UTC)
    assert page.entries[0].title == "Patient"
    assert all(e.origin is None and e.filter_tags == () for e in page.entries)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("<![CDATA[{json}]]>", id="cdata"),
        pytest.param("{escaped}", id="escaped-text"),
        pytest.param("&lt;![CDATA[{escaped}]]&gt;", id="literal-cdata-text"),
        pytest.param("\n   <![CDATA[{json}]]>\n  ", id="cdata-with-whitespace"),
    ],
)
def test_content_with_or_without_cdata(content: str) -> None:
    links = {"rest": "/ws/rest/v1/patient/abc?v=full", "fhir": "/ws/fhir/Patient/abc"}
    text = orjson.dumps(links).decode()
    entry = _parse_one(
        ["CREATED", "patient"], content.format(json=text, escaped=escape(text, {'"': "&quot;"}))
    )
    assert entry.links == links


def test_terms_in_any_order_and_case_with_filter_tags() -> None:
    content = _cdata({"rest": "/ws/rest/v1/patient/x?v=full"})
    for terms in (
        ["UPDATED", "patient", FILTER],
        [FILTER, "Patient", "UPDATED"],
        ["Patient", FILTER, "UPDATED"],
    ):
        entry = _parse_one(terms, content)
        assert (entry.action, entry.category) == ("UPDATED", "patient")
        assert entry.filter_tags == (FILTER,)


def test_first_action_and_first_category_win() -> None:
    entry = _parse_one(["UPDATED", "patient", "VOIDED", "person", FILTER, FILTER], "{}")
    assert (entry.action, entry.category) == ("UPDATED", "patient")
    assert entry.filter_tags == (FILTER, FILTER)
    assert entry.links == {}


def test_every_default_java_category_with_its_link_templates(reference_dir: Path) -> None:
    """One entry per feedConfiguration of the module's default file, terms shuffled."""
    config = orjson.loads(
        (reference_dir / "openmrs/atomfeed-module/defaultAtomfeedConfig.json").read_bytes()
    )
    rng = random.Random(7)
    expected: list[tuple[str, str, dict[str, str]]] = []
    entries = []
    forms = ("<![CDATA[{}]]>", "{}", "&lt;![CDATA[{}]]&gt;")
    for i, item in enumerate(config["feedConfigurations"]):
        uuid = f"{i:08d}-1111-4222-8333-444444444444"
        links = {
            client: template.replace("{uuid}", uuid).replace("{parent-uuid}", PERSON)
            for client, template in item["linkTemplates"].items()
        }
        # Key order of the Java hash map is arbitrary.
        shuffled = dict(rng.sample(sorted(links.items()), len(links)))
        action = rng.choice(["CREATED", "UPDATED", "VOIDED", "RETIRED", "DELETED"])
        terms = [action, item["category"]] + ([FILTER] if i % 3 == 0 else [])
        rng.shuffle(terms)
        text = orjson.dumps(shuffled).decode()
        body = forms[i % 3].format(text if i % 3 == 0 else escape(text))
        entries.append(_entry(f"j{i}", terms, body, title=item["title"]))
        expected.append((action, item["category"], links))
    page = parse_page(_page("patient", "".join(entries)), url="u")
    assert [(e.action, e.category, dict(e.links)) for e in page.entries] == expected
    by_category = {e.category: e for e in page.entries}
    for sub in ("person_name", "person_address", "person_attribute", "patient_identifier"):
        assert PERSON in by_category[sub].links["rest"]
    assert by_category["location"].links["fhir"].startswith("/ws/fhir/Location/")
    assert sum(1 for e in page.entries if e.filter_tags) == len(range(0, len(entries), 3))


def test_origin_extension_is_read_when_present() -> None:
    entry = (
        '<entry><title>Patient</title><category term="patient"/><category term="CREATED"/>'
        "<id>tag:atomfeed.ict4h.org:o1</id>"
        '<content type="application/vnd.atomfeed+xml"><![CDATA[{}]]></content>'
        '<fs:origin xmlns:fs="urn:fhirsync:atom"> clinic-7 </fs:origin>'
        '<other:origin xmlns:other="urn:somebody-else">no</other:origin></entry>'
    )
    (parsed,) = parse_page(_page("patient", entry), url="u").entries
    assert parsed.origin == "clinic-7"


def test_page_links_and_numbers() -> None:
    no_links = parse_page(_page("patient", "", links=""), url="http://asked/for/recent")
    assert no_links.self_url == "http://asked/for/recent"
    assert (no_links.via_url, no_links.page_number) == (None, None)
    assert no_links.entries == ()
    odd = (
        '<link rel="via" href="http://p/ws/atomfeed/patient/%C2%B2"/>'
        '<link rel="next-archive" href="http://p/ws/atomfeed/patient/9"/>'
    )
    page = parse_page(_page("patient", "", links=odd), url="u")
    assert page.page_number is None and page.next_archive == "http://p/ws/atomfeed/patient/9"
    superscript = '<link rel="via" href="http://p/ws/atomfeed/patient/\u00b2"/>'
    assert parse_page(_page("patient", "", links=superscript), url="u").page_number is None


def test_unparsable_updated_is_none() -> None:
    page = parse_page(
        _page("patient", _entry("x", ["CREATED", "patient"], "{}", updated="yesterday")), url="u"
    )
    assert page.entries[0].updated is None


URL = "http://java/ws/atomfeed/patient/7"


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (_entry("e9", ["patient"], "{}"), "entry tag:atomfeed.ict4h.org:e9 has no action"),
        (
            _entry("e9", ["CREATED", FILTER], "{}"),
            "entry tag:atomfeed.ict4h.org:e9 has no category",
        ),
        (_entry("e9", ["CREATED", "patient"], "not json"), "e9: content is not JSON"),
        (_entry("e9", ["CREATED", "patient"], ""), "e9: content is not JSON"),
        (_entry("e9", ["CREATED", "patient"], '["a"]'), "e9: content is not a JSON object"),
        (
            _entry("e9", ["CREATED", "patient"], escape('{"fhir": 3}')),
            "e9: content is not a JSON object",
        ),
        ('<entry><category term="CREATED"/><category term="patient"/></entry>', "has no id"),
    ],
)
def test_malformed_entries_name_the_url_and_entry(entry: str, needle: str) -> None:
    good = _entry("ok", ["CREATED", "patient"], "{}")
    with pytest.raises(MalformedFeed) as info:
        parse_page(_page("patient", good + entry), url=URL)
    assert needle in str(info.value)
    assert URL in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<feed",
        b"<feed xmlns='http://www.w3.org/2005/Atom'><entry></feed>",
        b"<html><body>Internal Server Error</body></html>",
        b'<rss version="2.0"><channel/></rss>',
        b"<feed><title>no namespace</title></feed>",
    ],
)
def test_syntax_errors_and_non_atom_documents_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedFeed) as info:
        parse_page(data, url=URL)
    assert URL in str(info.value)


def test_external_entities_are_not_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    data = (
        f'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>&x;</title>'
        '<link rel="self" href="http://p/&x;"/></feed>'
    ).encode()
    try:
        page = parse_page(data, url=URL)
    except MalformedFeed:
        return
    assert "TOP-SECRET" not in page.self_url
