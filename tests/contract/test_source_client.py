"""The SourceClient contract, run against every implementation (STYLE principle 10).

Each client (FhirClient, RestClient and the example plug-in registered through the registry) is
pointed at a real node on loopback. A client is done when this suite passes.
"""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests.contract import example_plugin

from fhirsync import categories
from fhirsync.categories import Category
from fhirsync.clients.base import OutgoingChange, RecordRef, SourceClient
from fhirsync.clients.registry import (
    ClientContext,
    build_client,
    load_client_factories,
    register_factory,
    unregister_factory,
)
from fhirsync.errors import (
    ConnectionFailed,
    RequestTimeout,
    ServerUnavailable,
    TransientError,
    Unauthenticated,
)
from fhirsync.store import records, users
from fhirsync.testing.proxy import FaultProxy
from fhirsync.testing.servers import NodeHandle, free_port
from fhirsync.testing.stub_http import QuietHandler, serving

NodeFactory = Callable[..., NodeHandle]
BATCH = 7
"""Small batches so 20 records take several requests; the node pages searches by 4."""
CLIENTS = ("fhir", "rest", example_plugin.NAME)


@dataclass
class Kit:
    """One client under test and how to make records of its category on the node."""

    name: str
    category: Category
    node: NodeHandle

    def body(self, index: int) -> dict[str, Any]:
        if self.category.is_fhir:
            return {
                "resourceType": "Patient",
                "gender": "female",
                "name": [{"family": f"Contract{index}", "given": ["Ama"]}],
            }
        return {"name": f"Visit type {index}", "description": "contract test"}

    def seed(self, count: int) -> list[str]:
        """Create ``count`` records through the node's own API (not the client under test)."""
        uuids = [str(uuid_lib.uuid4()) for _ in range(count)]
        with self.node.client() as http:
            if self.category.is_fhir:
                entries = [
                    {
                        "resource": {**self.body(i), "id": u},
                        "request": {"method": "PUT", "url": f"Patient/{u}"},
                    }
                    for i, u in enumerate(uuids)
                ]
                bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
                answer = http.post("/ws/fhir2/R4", json=bundle)
                assert answer.status_code == 200, answer.text
            else:
                for i, u in enumerate(uuids):
                    answer = http.post("/ws/rest/v1/visittype", json={**self.body(i), "uuid": u})
                    assert answer.status_code == 201, answer.text
        return uuids

    def void(self, uuid: str) -> None:
        path = (
            f"/ws/fhir2/R4/Patient/{uuid}"
            if self.category.is_fhir
            else f"/ws/rest/v1/visittype/{uuid}"
        )
        with self.node.client() as http:
            assert http.delete(path).status_code in (200, 204)

    def client(self, base_url: str | None = None, **overrides: Any) -> SourceClient:
        ctx = ClientContext(
            base_url=base_url or self.node.base_url,
            auth=overrides.pop("auth", self.node.auth),
            batch_size=BATCH,
            **overrides,
        )
        client = build_client(self.name, load_client_factories()[self.name], ctx)
        _opened.append((client, ctx))
        return client


_opened: list[tuple[SourceClient, ClientContext]] = []


@pytest.fixture(scope="module", autouse=True)
def _plugin() -> Iterator[None]:
    register_factory(example_plugin.NAME, example_plugin.make_client)
    yield
    unregister_factory(example_plugin.NAME)


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _opened:
        client, ctx = _opened.pop()
        client.close()
        ctx.close()


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    """One node for the whole module (fast); each test makes its own records."""
    from fhirsync.testing.servers import create_node

    root = tmp_path_factory.mktemp("contract")
    handle = create_node(
        root,
        "contract-parent",
        db_url=f"sqlite:///{root / 'parent.db'}",
        extra_settings={"search_max_count": 4},
    )
    handle.start()
    yield handle
    handle.stop()


@pytest.fixture(params=CLIENTS)
def kit(request: pytest.FixtureRequest, shared_node: NodeHandle) -> Kit:
    name: str = request.param
    category = categories.get("visittype" if name == "rest" else "patient")
    return Kit(name, category, shared_node)


def _refs(uuids: list[str]) -> list[RecordRef]:
    return [RecordRef(u, {}) for u in uuids]


def test_supports_its_category(kit: Kit) -> None:
    client = kit.client()
    assert client.supports(kit.category)
    assert client.name == kit.name


def test_batch_fetch_of_many_records(kit: Kit) -> None:
    uuids = kit.seed(20)
    result = kit.client().fetch(kit.category, _refs(uuids + uuids[:3]))  # duplicates too
    assert set(result.found) == set(uuids)
    assert not result.absent and not result.failed
    for uuid, body in result.found.items():
        assert body.get("id", body.get("uuid")) == uuid


def test_missing_ids_are_absent(kit: Kit) -> None:
    [present] = kit.seed(1)
    missing = [str(uuid_lib.uuid4()) for _ in range(3)]
    result = kit.client().fetch(kit.category, _refs([present, *missing]))
    assert set(result.found) == {present}
    assert result.absent == set(missing)
    assert not result.failed


def test_voided_records_are_absent_or_carry_their_state(kit: Kit) -> None:
    kept, voided = kit.seed(2)
    kit.void(voided)
    result = kit.client().fetch(kit.category, _refs([kept, voided]))
    assert kept in result.found
    if kit.category.is_fhir:
        # FHIR search and read do not return voided resources: absent, the feed action decides.
        assert voided in result.absent
    else:
        # REST representations say retired/voided themselves.
        assert result.found[voided]["retired"] is True


def test_unreachable_base_raises_connection_failed(kit: Kit) -> None:
    client = kit.client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectionFailed):
        client.fetch(kit.category, _refs([str(uuid_lib.uuid4())]))


def test_connection_dropped_mid_response_is_transient(kit: Kit) -> None:
    uuids = kit.seed(3)
    with FaultProxy("127.0.0.1", kit.node.port) as proxy:
        client = kit.client(proxy.base_url)
        proxy.drop_after(200, always=True)
        with pytest.raises(TransientError):
            client.fetch(kit.category, _refs(uuids))
        proxy.heal()
        assert set(client.fetch(kit.category, _refs(uuids)).found) == set(uuids)


def test_slow_remote_raises_request_timeout(kit: Kit) -> None:
    with FaultProxy("127.0.0.1", kit.node.port) as proxy:
        client = kit.client(proxy.base_url, read_timeout=0.2)
        proxy.delay(0.6)
        with pytest.raises(RequestTimeout):
            client.fetch(kit.category, _refs([str(uuid_lib.uuid4())]))


def test_server_error_raises_server_unavailable(kit: Kit, failing_server: str) -> None:
    client = kit.client(failing_server)
    with pytest.raises(ServerUnavailable):
        client.fetch(kit.category, _refs([str(uuid_lib.uuid4()), str(uuid_lib.uuid4())]))


def test_wrong_password_raises_unauthenticated(kit: Kit) -> None:
    client = kit.client(auth=("admin", "not-the-password"))
    with pytest.raises(Unauthenticated):
        client.fetch(kit.category, _refs([str(uuid_lib.uuid4())]))


def test_send_then_fetch_round_trip(kit: Kit) -> None:
    client = kit.client()
    uuids = [str(uuid_lib.uuid4()) for _ in range(3)]
    created = [
        OutgoingChange(kit.category.name, u, "CREATED", kit.body(i), "active")
        for i, u in enumerate(uuids)
    ]
    sent = client.send(kit.category, created)
    assert sent.sent == set(uuids) and not sent.failed
    fetched = client.fetch(kit.category, _refs(uuids))
    assert set(fetched.found) == set(uuids)
    voided = client.send(
        kit.category,
        [OutgoingChange(kit.category.name, uuids[0], "VOIDED", None, "voided")],
    )
    assert voided.sent == {uuids[0]}
    after = client.fetch(kit.category, _refs(uuids[:1]))
    assert uuids[0] in after.absent or after.found[uuids[0]].get("retired") is True


def test_send_stamps_the_first_origin(kit: Kit) -> None:
    """A change relayed from a node below the sender keeps that node as its origin."""
    _config, db = kit.node.open()
    try:
        with db.write() as conn:
            if not any(u.name == "contract-child" for u in users.list_all(conn)):
                users.add(conn, "contract-child", "contract-child-pw", "child", "contract-child")
    finally:
        db.dispose()
    client = kit.client(auth=("contract-child", "contract-child-pw"))
    relayed, own = str(uuid_lib.uuid4()), str(uuid_lib.uuid4())
    change = OutgoingChange(kit.category.name, relayed, "CREATED", kit.body(0), "active")
    assert client.send(kit.category, [change], origin="clinic-below").sent == {relayed}
    change = OutgoingChange(kit.category.name, own, "CREATED", kit.body(1), "active")
    assert client.send(kit.category, [change]).sent == {own}
    _config, db = kit.node.open()
    try:
        with db.read() as conn:
            held = records.get_many(conn, [kit.category.name], [relayed, own])
    finally:
        db.dispose()
    assert held[relayed].origin == "clinic-below"
    assert held[own].origin == "contract-child"


# --- a remote that always fails -----------------------------------------------------------------


class _Failing(QuietHandler):
    def _fail(self) -> None:
        self.answer(500, b'{"error": {"message": "database is down"}}')

    do_GET = do_POST = do_PUT = do_DELETE = _fail


@pytest.fixture(scope="module")
def failing_server() -> Iterator[str]:
    with serving(_Failing) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


def test_send_errors_follow_the_contract(kit: Kit, failing_server: str) -> None:
    change = OutgoingChange(
        kit.category.name, str(uuid_lib.uuid4()), "CREATED", kit.body(0), "active"
    )
    with pytest.raises(ServerUnavailable):
        kit.client(failing_server).send(kit.category, [change])
    with pytest.raises(Unauthenticated):
        kit.client(auth=("admin", "wrong")).send(kit.category, [change])


def test_http_types_stay_inside_the_clients(kit: Kit) -> None:
    client = kit.client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectionFailed) as caught:
        client.fetch(kit.category, _refs([str(uuid_lib.uuid4())]))
    assert not isinstance(caught.value, httpx.HTTPError)
    assert isinstance(caught.value.__cause__, httpx.HTTPError)  # the cause is chained
