"""X-Forwarded-Proto/Host shape the feed's links only when they come from a trusted proxy.

Archived pages are served ``Cache-Control: public``; a shared cache keys them by URL, not by
X-Forwarded-Host, so a client that could set the links would poison the page for every reader.
The untrusted client connects from 127.0.0.2 (loopback, but neither in the default
``trusted_proxies`` nor in uvicorn's own forwarded-allow list), so nothing rewrites its request.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest
from tests.conftest import NodeFactory
from tests.integration.pull_support import new_uuid, write_raw

from fhirsync.errors import ConfigurationError
from fhirsync.feed.parse import parse_page
from fhirsync.settings import parse_node_settings
from fhirsync.testing.servers import NodeHandle

ARCHIVED = "/ws/atomfeed/patient/1"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example, proxy"}


def _node_with_archive(node_factory: NodeFactory, **settings: object) -> NodeHandle:
    node = node_factory("feed", extra_settings={"feed_page_size": 2, **settings})
    bodies = [{"resourceType": "Patient", "id": new_uuid(), "gender": "female"} for _ in range(3)]
    write_raw(node, "patient", bodies, "feed")
    return node


@pytest.fixture
def from_127_0_0_2() -> Iterator[Callable[[NodeHandle], httpx.Client]]:
    """Makes admin clients of a node that connect from 127.0.0.2."""
    opened: list[httpx.Client] = []

    def make(node: NodeHandle) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        client = httpx.Client(base_url=node.base_url, auth=node.auth, transport=transport)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def test_an_untrusted_clients_forwarded_headers_are_ignored(
    node_factory: NodeFactory, from_127_0_0_2: Callable[[NodeHandle], httpx.Client]
) -> None:
    node = _node_with_archive(node_factory)
    client = from_127_0_0_2(node)
    poisoned = client.get(ARCHIVED, headers=FORWARDED)
    assert poisoned.status_code == 200
    assert poisoned.headers["cache-control"].startswith("public")
    page = parse_page(poisoned.content, url=ARCHIVED)
    assert page.self_url == f"{node.base_url}{ARCHIVED}"
    assert page.next_archive == f"{node.base_url}/ws/atomfeed/patient/2"
    assert "evil.example" not in poisoned.text
    # What a cache stores from that answer is exactly what a plain request gets.
    plain = client.get(ARCHIVED)
    assert (plain.content, plain.headers["etag"]) == (poisoned.content, poisoned.headers["etag"])


def test_a_trusted_proxys_forwarded_headers_shape_the_links(
    node_factory: NodeFactory, from_127_0_0_2: Callable[[NodeHandle], httpx.Client]
) -> None:
    node = _node_with_archive(node_factory, trusted_proxies=["127.0.0.0/29", "::1"])
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "central.example.org, proxy"}
    answer = from_127_0_0_2(node).get(ARCHIVED, headers=headers)
    assert answer.status_code == 200
    page = parse_page(answer.content, url=ARCHIVED)
    assert page.self_url == f"https://central.example.org{ARCHIVED}"
    assert page.next_archive == "https://central.example.org/ws/atomfeed/patient/2"


def test_the_default_trusts_a_proxy_on_this_host(node_factory: NodeFactory) -> None:
    node = _node_with_archive(node_factory)
    with node.client() as client:  # from 127.0.0.1
        answer = client.get(ARCHIVED, headers={"X-Forwarded-Host": "central.example.org"})
    assert parse_page(answer.content, url=ARCHIVED).self_url == (
        f"http://central.example.org{ARCHIVED}"
    )


def test_a_trusted_proxys_unknown_scheme_is_not_copied_into_links(
    node_factory: NodeFactory, from_127_0_0_2: Callable[[NodeHandle], httpx.Client]
) -> None:
    node = _node_with_archive(node_factory, trusted_proxies=["127.0.0.2"])
    headers = {"X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "central.example.org"}
    answer = from_127_0_0_2(node).get(ARCHIVED, headers=headers)
    assert parse_page(answer.content, url=ARCHIVED).self_url == (
        f"http://central.example.org{ARCHIVED}"
    )


@pytest.mark.parametrize(
    ("entries", "field", "shown"),
    [
        (["10.0.0.300"], "trusted_proxies", "'10.0.0.300' does not appear to be an IPv4 or IPv6"),
        (["10.0.0.1/8"], "trusted_proxies", "10.0.0.1/8 has host bits set"),
        (["proxy.internal"], "trusted_proxies", "'proxy.internal' does not appear"),
        ([8080], "trusted_proxies[0]", "Input should be a valid string"),
        ("127.0.0.1", "trusted_proxies", "Input should be a valid list"),
    ],
)
def test_a_bad_trusted_proxy_names_the_field(entries: object, field: str, shown: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_node_settings({"trusted_proxies": entries})
    assert raised.value.field == field
    assert f"field '{field}'" in str(raised.value)
    assert shown in str(raised.value)


def test_serve_refuses_a_bad_trusted_proxy_with_exit_code_2(node_factory: NodeFactory) -> None:
    node = node_factory("bad-proxy", start=False)
    path = node.node_dir / "fhirsync.json"
    settings = json.loads(path.read_text())
    path.write_text(json.dumps({**settings, "trusted_proxies": ["127.0.0.1", "not-an-ip"]}))
    done = subprocess.run(
        [sys.executable, "-m", "fhirsync", "serve", str(node.node_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr
    assert "field 'trusted_proxies'" in done.stderr
    assert "'not-an-ip'" in done.stderr


def test_a_trusted_proxy_that_also_sends_x_forwarded_for_is_still_trusted(
    node_factory: NodeFactory,
) -> None:
    node = _node_with_archive(node_factory)
    headers = {"X-Forwarded-Host": "central.example.org", "X-Forwarded-For": "203.0.113.9"}
    with node.client() as client:  # a proxy on 127.0.0.1, as nginx sends it
        answer = client.get(ARCHIVED, headers=headers)
    assert parse_page(answer.content, url=ARCHIVED).self_url == (
        f"http://central.example.org{ARCHIVED}"
    )
