"""FeedReader against a real fhirsync node's feed over loopback HTTP."""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Callable

import httpx
import pytest

from fhirsync import categories
from fhirsync.clients.base import RecordRef
from fhirsync.clients.facade import ClientFacade
from fhirsync.clients.http import make_http_client
from fhirsync.clients.registry import ClientContext, build_clients
from fhirsync.errors import TransientError, Unauthenticated
from fhirsync.feed.reader import FeedReader
from fhirsync.testing.proxy import FaultProxy
from fhirsync.testing.servers import NodeHandle

NodeFactory = Callable[..., NodeHandle]
PAGE = 3


def _seed(node: NodeHandle, count: int) -> list[str]:
    uuids = [str(uuid_lib.uuid4()) for _ in range(count)]
    entries = [
        {
            "resource": {"resourceType": "Patient", "id": u, "gender": "other"},
            "request": {"method": "PUT", "url": f"Patient/{u}"},
        }
        for u in uuids
    ]
    with node.client() as http:
        answer = http.post(
            "/ws/fhir2/R4", json={"resourceType": "Bundle", "type": "batch", "entry": entries}
        )
        assert answer.status_code == 200, answer.text
    return uuids


@pytest.fixture
def parent(node_factory: NodeFactory) -> NodeHandle:
    return node_factory("feed-parent", extra_settings={"feed_page_size": PAGE})


def _reader(
    base: str, auth: tuple[str, str], seen: list[httpx.Request] | None = None
) -> FeedReader:
    http = make_http_client(base, auth, read_timeout=5)
    if seen is not None:
        http.event_hooks["request"] = [seen.append]
    return FeedReader(http, base, owns_http=True)


def test_first_read_walks_forward_from_page_one(parent: NodeHandle) -> None:
    uuids = _seed(parent, 10)
    seen: list[httpx.Request] = []
    reader = _reader(parent.base_url, parent.auth, seen)
    chunks = list(reader.read("patient"))
    reader.close()
    assert [c.page for c in chunks] == [1, 2, 3, 4]
    assert [len(c.entries) for c in chunks] == [3, 3, 3, 1]
    assert [str(r.url.path).rsplit("/", 1)[-1] for r in seen] == ["1", "2", "3", "4"]
    facade_uuid = [
        ClientFacade({}, "fhir").extract_uuid(categories.get("patient"), e.links)
        for c in chunks
        for e in c.entries
    ]
    assert facade_uuid == uuids


def test_resume_after_marker_and_fetch_what_it_names(parent: NodeHandle) -> None:
    uuids = _seed(parent, 8)
    reader = _reader(parent.base_url, parent.auth)
    first = list(reader.read("patient"))
    marker = first[1].entries[0]  # fourth entry, on page 2
    more = _seed(parent, 2)
    chunks = list(reader.read("patient", after_entry_id=marker.entry_id, page=first[1].page))
    reader.close()
    entries = [e for c in chunks for e in c.entries]
    patient = categories.get("patient")
    named = [ClientFacade({}, "fhir").extract_uuid(patient, e.links) for e in entries]
    assert named == uuids[4:] + more
    assert all(c.recovered is None for c in chunks)
    # the entries' records fetched in one batch through the facade's FHIR client
    ctx = ClientContext(parent.base_url, parent.auth)
    facade = ClientFacade(build_clients(ctx), "fhir", on_close=[ctx.close])
    client = facade.choose(patient, entries[0].links)
    result = client.fetch(patient, [RecordRef(u, {}) for u in named if u])
    facade.close()
    assert set(result.found) == set(named)


def test_wrong_password_is_unauthenticated(parent: NodeHandle) -> None:
    _seed(parent, 1)
    reader = _reader(parent.base_url, ("admin", "wrong"))
    with pytest.raises(Unauthenticated):
        list(reader.read("patient"))
    reader.close()


def test_parent_gone_mid_read_is_transient_and_resumable(parent: NodeHandle) -> None:
    _seed(parent, 7)
    with FaultProxy("127.0.0.1", parent.port) as proxy:
        reader = _reader(proxy.base_url, parent.auth)
        pages = reader.read("patient")
        got = next(pages)
        proxy.refuse()
        with pytest.raises(TransientError):
            next(pages)
        proxy.heal()
        last = got.entries[-1]
        rest = list(reader.read("patient", after_entry_id=last.entry_id, page=got.page))
        reader.close()
    assert sum(len(c.entries) for c in rest) == 4


def test_for_parent_reads_with_the_child_credentials(node_factory: NodeFactory) -> None:
    parent = node_factory("p2", extra_settings={"feed_page_size": PAGE})
    uuids = _seed(parent, 4)
    child = node_factory("c2", parent=parent, start=False)
    config, db = child.open()
    db.dispose()
    reader = FeedReader.for_parent(config)
    try:
        entries = [e for c in reader.read("patient") for e in c.entries]
    finally:
        reader.close()
    assert len(entries) == len(uuids)
