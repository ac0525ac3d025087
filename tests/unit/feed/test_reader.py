"""FeedReader against a Java-style publisher: page 1 first, resume, recovery, errors, Java quirks."""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Iterator

import pytest

from fhirsync import categories
from fhirsync.clients.facade import extract_uuid, owner_ref
from fhirsync.clients.http import make_http_client
from fhirsync.errors import ConnectionFailed, MalformedFeed, TransientError
from fhirsync.feed.reader import FeedPageChunk, FeedReader, _search_order
from fhirsync.testing.javafeed import JavaEvent, JavaFeedServer
from fhirsync.testing.proxy import FaultProxy
from fhirsync.testing.servers import free_port


def _events(count: int, category: str = "patient") -> list[JavaEvent]:
    return [JavaEvent(category, str(uuid_lib.uuid4())) for _ in range(count)]


@pytest.fixture
def java() -> Iterator[JavaFeedServer]:
    with JavaFeedServer(_events(13)).start() as server:  # pages of 5: 5, 5, 3
        yield server


def _reader(base_url: str) -> FeedReader:
    return FeedReader(make_http_client(base_url, None, read_timeout=5), base_url, owns_http=True)


def _read(java: JavaFeedServer, **marker: object) -> list[FeedPageChunk]:
    reader = _reader(java.base_url)
    try:
        return list(reader.read("patient", **marker))  # type: ignore[arg-type]
    finally:
        reader.close()


def _ids(chunks: list[FeedPageChunk]) -> list[str]:
    return [e.entry_id for c in chunks for e in c.entries]


def test_first_read_starts_at_page_one_and_never_walks_back(java: JavaFeedServer) -> None:
    chunks = _read(java)
    assert [(c.page, len(c.entries)) for c in chunks] == [(1, 5), (2, 5), (3, 3)]
    assert _ids(chunks) == [e.entry_id for e in java.events]
    assert java.feed_requests("patient") == ["1", "2", "3"]  # no recent, no prev-archive walk
    assert all(c.recovered is None for c in chunks)


def test_resume_after_a_marker_reads_only_what_follows(java: JavaFeedServer) -> None:
    marked = java.events[6]  # third entry of page 2
    chunks = _read(java, after_entry_id=marked.entry_id, page=2)
    assert _ids(chunks) == [e.entry_id for e in java.events[7:]]
    assert [c.page for c in chunks] == [2, 3]
    assert java.feed_requests("patient") == ["2", "3"]


def test_marker_on_the_last_entry_yields_nothing_new(java: JavaFeedServer) -> None:
    chunks = _read(java, after_entry_id=java.events[-1].entry_id, page=3)
    assert _ids(chunks) == []


def test_marker_found_on_a_neighbouring_page_is_reported(java: JavaFeedServer) -> None:
    marked = java.events[6]  # on page 2, but the marker says page 1
    chunks = _read(java, after_entry_id=marked.entry_id, page=1)
    assert _ids(chunks) == [e.entry_id for e in java.events[7:]]
    assert chunks[0].page == 2
    assert chunks[0].recovered is not None and "page 2" in chunks[0].recovered


def test_a_marker_entry_gone_from_the_feed_reads_it_again_from_page_one(
    java: JavaFeedServer,
) -> None:
    # The publisher was restored from a backup: the marked entry is on no page, and the changes
    # made since may be on any page (resuming from the marker's page would skip page 1's).
    chunks = _read(java, after_entry_id="tag:atomfeed.ict4h.org:gone", page=2)
    assert _ids(chunks) == [e.entry_id for e in java.events]
    assert chunks[0].page == 1
    assert chunks[0].recovered is not None and "read again from page 1" in chunks[0].recovered
    assert all(c.recovered is None for c in chunks[1:])
    # Every page was searched once, the marker's first, then from the end; then read from 1.
    assert java.feed_requests("patient") == ["2", "recent", "1", "3", "1", "2", "3"]


def test_marker_page_past_the_end_is_not_an_outage(java: JavaFeedServer) -> None:
    # A Java publisher answers 500 for a page past its last one; that is not an outage.
    chunks = _read(java, after_entry_id="tag:atomfeed.ict4h.org:gone", page=9)
    assert _ids(chunks) == [e.entry_id for e in java.events]
    assert chunks[0].recovered is not None


def test_marker_entry_on_an_earlier_page_is_found_when_pages_grew(java: JavaFeedServer) -> None:
    # The marker was taken when pages were smaller: page 9 is past the end now and its entry is on
    # page 2. Resuming from the last page would skip the rest of page 2.
    marked = java.events[6]
    chunks = _read(java, after_entry_id=marked.entry_id, page=9)
    assert _ids(chunks) == [e.entry_id for e in java.events[7:]]
    assert chunks[0].page == 2
    assert chunks[0].recovered is not None and "on page 2, not page 9" in chunks[0].recovered


def test_pages_are_searched_near_the_marker_first_then_from_the_end() -> None:
    assert list(_search_order(5, 9)) == [4, 6, 9, 8, 7, 3, 2, 1]
    assert list(_search_order(1, 3)) == [2, 3]
    assert list(_search_order(12, 3)) == [3, 2, 1]
    assert list(_search_order(2, 0)) == []  # an empty feed


def test_marker_without_a_page_is_found_by_scanning(java: JavaFeedServer) -> None:
    chunks = _read(java, after_entry_id=java.events[8].entry_id, page=None)
    assert _ids(chunks) == [e.entry_id for e in java.events[9:]]
    assert chunks[0].recovered is None


def test_empty_java_feed_reads_recent_instead_of_failing() -> None:
    with JavaFeedServer([]).start() as java:  # page 1 of an empty Java feed is a 500
        chunks = _read(java)
    assert _ids(chunks) == []
    # Two requests per empty feed (page 1, then recent once): a pull reads ~30 feeds per run.
    assert java.feed_requests("patient") == ["1", "recent"]


def test_malformed_page_raises_malformed_feed(java: JavaFeedServer) -> None:
    java.broken_pages.add(("patient", "2"))
    reader = _reader(java.base_url)
    pages = reader.read("patient")
    assert len(next(pages).entries) == 5  # page 1 was fine and was yielded first
    with pytest.raises(MalformedFeed):
        next(pages)
    reader.close()


def test_connection_dropped_mid_read_is_transient(java: JavaFeedServer) -> None:
    port = int(java.base_url.split(":")[2].split("/")[0])
    with FaultProxy("127.0.0.1", port) as proxy:
        base = f"{proxy.base_url}/openmrs"
        reader = _reader(base)
        pages = reader.read("patient")
        next(pages)
        proxy.drop_after(300)
        with pytest.raises(TransientError):
            next(pages)
        reader.close()


def test_unreachable_publisher_raises_connection_failed() -> None:
    reader = _reader(f"http://127.0.0.1:{free_port()}/openmrs")
    with pytest.raises(ConnectionFailed):
        list(reader.read("patient"))
    reader.close()


@pytest.mark.parametrize("cdata", [True, False])
def test_java_feed_read_completely_in_order(cdata: bool) -> None:
    person, patient = str(uuid_lib.uuid4()), str(uuid_lib.uuid4())
    events = [
        *_events(6),
        JavaEvent("patient", patient, "UPDATED", location_filter="Kenya%Nairobi%null%null%null"),
        JavaEvent("patient", patient, "VOIDED"),
        JavaEvent("patient", patient, "UNVOIDED"),
        *_events(3),
        JavaEvent("person_name", str(uuid_lib.uuid4()), "UPDATED", parent_uuid=person),
    ]
    with JavaFeedServer(events, cdata=cdata, seed=3).start() as java:
        patient_chunks = _read(java)
        reader = _reader(java.base_url)
        name_chunks = list(reader.read("person_name"))
        reader.close()
    patient_events = [e for e in events if e.category == "patient"]
    entries = [e for c in patient_chunks for e in c.entries]
    assert [e.entry_id for e in entries] == [e.entry_id for e in patient_events]
    assert [e.action for e in entries] == [e.action for e in patient_events]
    assert {e.category for e in entries} == {"patient"}
    assert len(entries[6].filter_tags) == 1
    patient_cat = categories.get("patient")
    for entry, event in zip(entries, patient_events, strict=True):
        assert entry.links["fhir"] == f"/ws/fhir/Patient/{event.uuid}"  # the old Java form
        assert extract_uuid(patient_cat, entry.links) == event.uuid
    [name_entry] = [e for c in name_chunks for e in c.entries]
    name_cat = categories.get("person_name")
    assert extract_uuid(name_cat, name_entry.links) == events[-1].uuid
    assert owner_ref(name_cat, name_entry.links) == (categories.get("person"), person)


@pytest.mark.parametrize(
    ("url", "page"),
    [
        ("http://p/ws/atomfeed/patient/12", 12),
        ("http://p/ws/atomfeed/patient/²", None),
        (None, None),
    ],
)
def test_a_page_link_that_ends_in_no_ascii_number_has_no_page(
    url: str | None, page: int | None
) -> None:
    from fhirsync.feed.reader import _page_of

    # "²" passes str.isdigit() but not int(): it was a ValueError outside the error hierarchy.
    assert _page_of(url) == page
