"""The Atom feed served by a real node: paging across archives, caching, auth, parsed three ways.

Every page is checked with lxml against the exact shape of spec §3.5, with feedparser as an
independent Atom client, and with our own parser (what a child's pull reads).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import feedparser
import httpx
import orjson
import pytest
from lxml import etree
from tests.conftest import NodeFactory

from fhirsync.feed.parse import parse_page
from fhirsync.records import RecordState, RecordWrite
from fhirsync.store import records, users
from fhirsync.testing.servers import NodeHandle

NS = {"a": "http://www.w3.org/2005/Atom", "fs": "urn:fhirsync:atom"}
ARCHIVE_CACHE = "public, max-age=31536000, immutable"
ACTIONS = {"CREATED", "UPDATED", "VOIDED", "UNVOIDED", "RETIRED", "UNRETIRED", "DELETED"}
ENTRY_SHAPE = ["title", "category", "category", "id", "updated", "published", "content", "origin"]


def _uuid(i: int, prefix: str = "00000000") -> str:
    return f"{prefix}-0000-4000-8000-{i:012d}"


def _write(
    handle: NodeHandle,
    uuids: list[str],
    *,
    category: str = "patient",
    state: RecordState = "active",
    body: Mapping[str, object] | None = None,
) -> None:
    _config, db = handle.open()
    if body is None:
        body = {"resourceType": "Patient", "gender": "female"}
    try:
        with db.write() as conn:
            records.write_many(
                conn,
                [RecordWrite(category, u, body, "node-x", state=state) for u in uuids],
            )
    finally:
        db.dispose()


def _shape(feed: etree._Element) -> list[str]:
    out = []
    for child in feed:
        name = etree.QName(child).localname
        out.append(f"link:{child.get('rel')}" if name == "link" else name)
    return out


def _check_exact_shape(body: bytes, *, base: str, page: int, latest: int, size: int) -> None:
    """The page against spec §3.5, element by element."""
    feed = etree.fromstring(body)
    expected_links = ["link:self", "link:via"]
    expected_links += ["link:next-archive"] if page < latest else []
    expected_links += ["link:prev-archive"] if page > 1 else []
    count = len(feed.findall("a:entry", NS))
    assert _shape(feed) == [
        "title",
        *expected_links,
        "author",
        "id",
        "generator",
        "updated",
        *(["entry"] * count),
    ]
    # Archives are full; the latest page holds the rest (none only in an empty feed).
    assert count == size if page < latest else count <= size
    hrefs = {link.get("rel"): link.get("href") for link in feed.findall("a:link", NS)}
    assert hrefs["via"] == f"{base}/{page}"
    assert hrefs.get("next-archive") == (f"{base}/{page + 1}" if page < latest else None)
    assert hrefs.get("prev-archive") == (f"{base}/{page - 1}" if page > 1 else None)
    assert feed.xpath("string(a:id)", namespaces=NS) == (
        f"a2ad93fd-8a7f-405f-bbc1-da4535e6d05c+{page}"
    )
    assert feed.xpath("string(a:author/a:name)", namespaces=NS) == "SolDevelo"
    assert feed.xpath("string(a:generator/@uri)", namespaces=NS) == (
        "https://github.com/ICT4H/atomfeed"
    )
    for entry in feed.findall("a:entry", NS):
        assert [etree.QName(c).localname for c in entry] == ENTRY_SHAPE
        terms = [c.get("term") for c in entry.findall("a:category", NS)]
        assert terms[1] == "patient" and terms[0] in ACTIONS
        assert entry.findtext("fs:origin", namespaces=NS) == "node-x"
        assert entry.find("a:content", NS).get("type") == "application/vnd.atomfeed+xml"  # type: ignore[union-attr]


def _check_with_feedparser(body: bytes, *, base: str, page: int, latest: int) -> list[str]:
    """The page as an independent Atom client sees it; returns the record links in order."""
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    rels = {link["rel"]: link["href"] for link in parsed.feed.links}
    assert rels["via"] == f"{base}/{page}"
    assert ("next-archive" in rels) == (page < latest)
    assert ("prev-archive" in rels) == (page > 1)
    out = []
    for entry in parsed.entries:
        assert entry.id.startswith("tag:atomfeed.ict4h.org:")
        assert [t["term"] for t in entry.tags] == ["CREATED", "patient"]
        assert entry.title == "Patient"
        out.append(orjson.loads(entry.content[0]["value"])["fhir"])
    return out


@pytest.fixture
def small_pages(node_factory: NodeFactory) -> NodeHandle:
    return node_factory("feed", extra_settings={"feed_page_size": 5})


@pytest.fixture
def client(small_pages: NodeHandle) -> Iterator[httpx.Client]:
    with small_pages.client() as c:
        yield c


def _walk(client: httpx.Client, base: str, latest: int, size: int) -> tuple[list[str], list[str]]:
    """Every page 1..latest, checked three ways; returns (links per feedparser, entry ids)."""
    links: list[str] = []
    ids: list[str] = []
    for page in range(1, latest + 1):
        response = client.get(f"{base}/{page}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/atom+xml")
        body = response.content
        _check_exact_shape(body, base=base, page=page, latest=latest, size=size)
        links += _check_with_feedparser(body, base=base, page=page, latest=latest)
        ours = parse_page(body, url=f"{base}/{page}")
        assert ours.page_number == page and ours.self_url == f"{base}/{page}"
        ids += [e.entry_id for e in ours.entries]
    return links, ids


@pytest.mark.postgres
def test_paging_across_many_archives(small_pages: NodeHandle, client: httpx.Client) -> None:
    uuids = [_uuid(i) for i in range(23)]
    _write(small_pages, uuids[:10])
    _write(small_pages, uuids[10:])
    base = f"{small_pages.base_url}/ws/atomfeed/patient"
    links, ids = _walk(client, base, latest=5, size=5)
    # Oldest first, every event exactly once, across all five pages.
    assert links == [f"/ws/fhir2/R4/Patient/{u}" for u in uuids]
    assert len(set(ids)) == 23
    recent = client.get(f"{base}/recent")
    _check_exact_shape(recent.content, base=base, page=5, latest=5, size=5)
    parsed = parse_page(recent.content, url=f"{base}/recent")
    assert parsed.self_url == f"{base}/recent"
    assert parsed.via_url == f"{base}/5"
    assert [e.entry_id for e in parsed.entries] == ids[20:]
    # Following prev-archive from recent reaches page 1, as an OpenMRS client does on first run.
    seen = [parsed.page_number]
    while parsed.prev_archive:
        parsed = parse_page(client.get(parsed.prev_archive).content, url=parsed.prev_archive)
        seen.append(parsed.page_number)
    assert seen == [5, 4, 3, 2, 1]


def test_categories_page_independently(small_pages: NodeHandle, client: httpx.Client) -> None:
    _write(small_pages, [_uuid(i) for i in range(7)])
    concept = {"uuid": "x", "display": "Weight"}
    _write(small_pages, [_uuid(i, "11111111") for i in range(3)], category="concept", body=concept)
    patient = parse_page(client.get("/ws/atomfeed/patient/recent").content, url="p")
    concepts = parse_page(client.get("/ws/atomfeed/concept/recent").content, url="c")
    assert (patient.page_number, len(patient.entries)) == (2, 2)
    assert (concepts.page_number, len(concepts.entries)) == (1, 3)
    assert concepts.entries[0].links == {
        "rest": f"/ws/rest/v1/concept/{_uuid(0, '11111111')}?v=full"
    }
    assert {e.category for e in concepts.entries} == {"concept"}


def test_archives_are_immutable_and_cacheable(
    small_pages: NodeHandle, client: httpx.Client
) -> None:
    _write(small_pages, [_uuid(i) for i in range(7)])
    base = "/ws/atomfeed/patient"
    archive = client.get(f"{base}/1")
    assert archive.headers["cache-control"] == ARCHIVE_CACHE
    etag = archive.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = client.get(f"{base}/1", headers={"If-None-Match": header})
        assert cached.status_code == 304, header
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        assert cached.headers["cache-control"] == ARCHIVE_CACHE
    assert client.get(f"{base}/1", headers={"If-None-Match": '"other"'}).status_code == 200
    # New events do not touch an archive.
    _write(small_pages, [_uuid(i) for i in range(7, 12)])
    again = client.get(f"{base}/1", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert client.get(f"{base}/1").content == archive.content


def test_recent_and_the_latest_page_revalidate(
    small_pages: NodeHandle, client: httpx.Client
) -> None:
    _write(small_pages, [_uuid(i) for i in range(7)])
    base = "/ws/atomfeed/patient"
    recent = client.get(f"{base}/recent")
    latest = client.get(f"{base}/2")
    for response in (recent, latest):
        assert response.headers["cache-control"] == "no-cache"
    assert recent.headers["etag"] != latest.headers["etag"]  # different self link, different bytes
    tag, latest_tag = recent.headers["etag"], latest.headers["etag"]
    assert client.get(f"{base}/recent", headers={"If-None-Match": tag}).status_code == 304
    assert client.get(f"{base}/2", headers={"If-None-Match": latest_tag}).status_code == 304
    _write(small_pages, [_uuid(99)])
    changed = client.get(f"{base}/recent", headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert len(parse_page(changed.content, url="r").entries) == 3
    assert client.get(f"{base}/2", headers={"If-None-Match": latest_tag}).status_code == 200
    # Once page 2 fills and page 3 begins, page 2 becomes an archive.
    _write(small_pages, [_uuid(i) for i in range(100, 103)])
    archived = client.get(f"{base}/2")
    assert archived.headers["cache-control"] == ARCHIVE_CACHE
    assert client.get(f"{base}/recent").headers["cache-control"] == "no-cache"


def test_page_size_is_part_of_the_etag(node_factory: NodeFactory) -> None:
    tags = []
    for size in (5, 6):
        handle = node_factory(f"size{size}", extra_settings={"feed_page_size": size})
        _write(handle, [_uuid(i) for i in range(13)])
        with handle.client() as c:
            first = c.get("/ws/atomfeed/patient/1")
            assert len(parse_page(first.content, url="u").entries) == size
            tags.append(first.headers["etag"])
    assert tags[0] != tags[1]


def test_every_action_appears_in_the_feed(small_pages: NodeHandle, client: httpx.Client) -> None:
    uuid = _uuid(1)
    _write(small_pages, [uuid])
    states: tuple[RecordState, ...] = ("voided", "active")
    for state in states:
        _write(small_pages, [uuid], state=state)
    page = parse_page(client.get("/ws/atomfeed/patient/recent").content, url="r")
    assert [e.action for e in page.entries][:1] == ["CREATED"]
    assert "VOIDED" in [e.action for e in page.entries]
    assert "UNVOIDED" in [e.action for e in page.entries]
    assert all(e.links == {"fhir": f"/ws/fhir2/R4/Patient/{uuid}"} for e in page.entries)


@pytest.mark.postgres
def test_an_empty_feed_and_pages_that_do_not_exist(node: NodeHandle) -> None:
    with node.client() as c:
        empty = c.get("/ws/atomfeed/patient/recent")
        assert empty.status_code == 200
        base = f"{node.base_url}/ws/atomfeed/patient"
        _check_exact_shape(empty.content, base=base, page=1, latest=1, size=1000)
        assert feedparser.parse(empty.content).entries == []
        parsed = parse_page(empty.content, url="r")
        assert parsed.page_number == 1 and parsed.entries == ()
        assert c.get("/ws/atomfeed/patient/1").status_code == 200
        for path in (
            "/ws/atomfeed/patient/0",
            "/ws/atomfeed/patient/2",
            "/ws/atomfeed/patient/-1",
            "/ws/atomfeed/patient/abc",
            "/ws/atomfeed/patient/%C2%B2",
            "/ws/atomfeed/patient/" + "9" * 5000,
            "/ws/atomfeed/spaceship/recent",
            "/ws/atomfeed/spaceship/1",
        ):
            response = c.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"].startswith("application/json")
            assert "error" in response.json()


def test_beyond_the_latest_page_is_404(small_pages: NodeHandle, client: httpx.Client) -> None:
    _write(small_pages, [_uuid(i) for i in range(10)])
    assert client.get("/ws/atomfeed/patient/2").status_code == 200
    assert client.get("/ws/atomfeed/patient/3").status_code == 404
    # Exactly full: recent is page 2, and page 2 has no next-archive.
    recent = parse_page(client.get("/ws/atomfeed/patient/recent").content, url="r")
    assert recent.page_number == 2 and recent.next_archive is None


def test_feeds_need_credentials_and_every_role_may_read(node: NodeHandle) -> None:
    url = f"{node.base_url}/ws/atomfeed/patient/recent"
    response = httpx.get(url)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(url, auth=("admin", "wrong-password")).status_code == 401
    assert httpx.get(url, auth=("nobody", "wrong-password")).status_code == 401
    _config, db = node.open()
    try:
        with db.write() as conn:
            users.add(conn, "viewer-1", "viewer-password", "viewer")
            users.add(conn, "child-1", "child-password", "child", "clinic-1")
    finally:
        db.dispose()
    assert httpx.get(url, auth=("viewer-1", "viewer-password")).status_code == 200
    assert httpx.get(url, auth=("child-1", "child-password")).status_code == 200


def test_forwarded_headers_shape_the_links(small_pages: NodeHandle, client: httpx.Client) -> None:
    _write(small_pages, [_uuid(i) for i in range(6)])
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "central.example.org, proxy"}
    forwarded = client.get("/ws/atomfeed/patient/recent", headers=headers)
    page = parse_page(forwarded.content, url="r")
    assert page.self_url == "https://central.example.org/ws/atomfeed/patient/recent"
    assert page.via_url == "https://central.example.org/ws/atomfeed/patient/2"
    assert page.prev_archive == "https://central.example.org/ws/atomfeed/patient/1"
    # Different links, different bytes: the validator differs too.
    direct = client.get("/ws/atomfeed/patient/recent")
    assert direct.headers["etag"] != forwarded.headers["etag"]
    assert parse_page(direct.content, url="r").self_url.startswith(small_pages.base_url)
