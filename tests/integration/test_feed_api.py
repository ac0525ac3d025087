"""The Atom feed served by a real node: paging across archives, caching, auth, two parsers."""

from __future__ import annotations

import feedparser
import httpx
import pytest
from lxml import etree
from tests.conftest import NodeFactory

from fhirsync.records import RecordWrite
from fhirsync.store import records
from fhirsync.testing.servers import NodeHandle

NS = {"a": "http://www.w3.org/2005/Atom"}


def _write_patients(handle: NodeHandle, count: int, *, state: str = "active") -> list[str]:
    _config, db = handle.open()
    uuids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(count)]
    with db.write() as conn:
        records.write_many(
            conn,
            [
                RecordWrite(
                    "patient",
                    u,
                    {"resourceType": "Patient", "gender": "female"},
                    "node-x",
                    state=state,
                )  # type: ignore[arg-type]
                for u in uuids
            ],
        )
    db.dispose()
    return uuids


@pytest.fixture
def small_pages(node_factory: NodeFactory) -> NodeHandle:
    return node_factory("feed", extra_settings={"feed_page_size": 5})


def test_paging_across_archives_parsed_two_ways(small_pages: NodeHandle) -> None:
    uuids = _write_patients(small_pages, 12)
    base = f"{small_pages.base_url}/ws/atomfeed/patient"
    seen: list[str] = []
    with small_pages.client() as client:
        recent = client.get(f"{base}/recent")
        assert recent.status_code == 200
        assert recent.headers["content-type"].startswith("application/atom+xml")
        doc = etree.fromstring(recent.content)
        assert doc.find("a:link[@rel='via']", NS).get("href") == f"{base}/3"
        for page in (1, 2, 3):
            body = client.get(f"{base}/{page}").content
            tree = etree.fromstring(body)
            rels = {link.get("rel"): link.get("href") for link in tree.findall("a:link", NS)}
            assert rels["via"] == f"{base}/{page}"
            assert ("next-archive" in rels) == (page < 3)
            assert ("prev-archive" in rels) == (page > 1)
            parsed = feedparser.parse(body)
            assert not parsed.bozo, parsed.get("bozo_exception")
            feed_links = {link["rel"]: link["href"] for link in parsed.feed.links}
            assert feed_links["via"] == f"{base}/{page}"
            assert len(parsed.entries) == (5 if page < 3 else 2)
            for entry in parsed.entries:
                assert entry.id.startswith("tag:atomfeed.ict4h.org:")
                terms = [t["term"] for t in entry.tags]
                assert terms == ["CREATED", "patient"]
                seen.append(entry.content[0]["value"])
    assert [f'{{"fhir":"/ws/fhir2/R4/Patient/{u}"}}' for u in uuids] == seen


def test_archives_are_immutable_and_cacheable_recent_is_revalidated(
    small_pages: NodeHandle,
) -> None:
    _write_patients(small_pages, 7)
    base = f"{small_pages.base_url}/ws/atomfeed/patient"
    with small_pages.client() as client:
        archive = client.get(f"{base}/1")
        assert archive.headers["cache-control"] == "public, max-age=31536000, immutable"
        etag = archive.headers["etag"]
        assert not etag.startswith("W/")
        assert client.get(f"{base}/1", headers={"If-None-Match": etag}).status_code == 304
        recent = client.get(f"{base}/recent")
        assert recent.headers["cache-control"] == "no-cache"
        recent_tag = recent.headers["etag"]
        assert (
            client.get(f"{base}/recent", headers={"If-None-Match": recent_tag}).status_code == 304
        )
    _write_patients_more(small_pages)
    with small_pages.client() as client:
        again = client.get(f"{base}/recent", headers={"If-None-Match": recent_tag})
        assert again.status_code == 200
        assert client.get(f"{base}/1", headers={"If-None-Match": etag}).status_code == 304


def _write_patients_more(handle: NodeHandle) -> None:
    _config, db = handle.open()
    with db.write() as conn:
        records.write(conn, RecordWrite("patient", "extra-1", {"resourceType": "Patient"}, "x"))
    db.dispose()


def test_page_size_is_part_of_the_archive_etag(node_factory: NodeFactory) -> None:
    five = node_factory("five", extra_settings={"feed_page_size": 5})
    six = node_factory("six", extra_settings={"feed_page_size": 6})
    tags = []
    for handle in (five, six):
        _write_patients(handle, 13)
        with handle.client() as client:
            tags.append(client.get(f"{handle.base_url}/ws/atomfeed/patient/1").headers["etag"])
    assert tags[0] != tags[1]


def test_voids_appear_as_their_own_action(small_pages: NodeHandle) -> None:
    _write_patients(small_pages, 1)
    _config, db = small_pages.open()
    with db.write() as conn:
        records.write(
            conn,
            RecordWrite(
                "patient", "00000000-0000-4000-8000-000000000000", None, "node-x", state="voided"
            ),
        )
    db.dispose()
    with small_pages.client() as client:
        parsed = feedparser.parse(client.get("/ws/atomfeed/patient/recent").content)
    assert [e.tags[0]["term"] for e in parsed.entries] == ["CREATED", "VOIDED"]


@pytest.mark.postgres
def test_empty_feed_and_bad_pages(node: NodeHandle) -> None:
    with node.client() as client:
        empty = client.get("/ws/atomfeed/patient/recent")
        assert empty.status_code == 200
        assert feedparser.parse(empty.content).entries == []
        assert client.get("/ws/atomfeed/patient/1").status_code == 200
        for path in (
            "/ws/atomfeed/patient/0",
            "/ws/atomfeed/patient/2",
            "/ws/atomfeed/patient/abc",
            "/ws/atomfeed/spaceship/recent",
        ):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "error" in response.json()


def test_feeds_need_credentials(node: NodeHandle) -> None:
    response = httpx.get(f"{node.base_url}/ws/atomfeed/patient/recent")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    wrong = httpx.get(f"{node.base_url}/ws/atomfeed/patient/recent", auth=("admin", "nope-nope"))
    assert wrong.status_code == 401


def test_forwarded_headers_shape_the_links(small_pages: NodeHandle) -> None:
    with small_pages.client() as client:
        body = client.get(
            "/ws/atomfeed/patient/recent",
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "central.example.org"},
        ).content
    self_link = etree.fromstring(body).find("a:link[@rel='self']", NS).get("href")
    assert self_link == "https://central.example.org/ws/atomfeed/patient/recent"
