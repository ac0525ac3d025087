"""The fault-injecting proxy: pass-through, refuse, drop mid-stream (once/always), delay, heal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import httpx
import pytest

from fhirsync.testing.proxy import FaultProxy
from fhirsync.testing.stub_http import QuietHandler, serving

BODY = b"x" * 200_000


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        self.answer(200, BODY, "application/octet-stream")


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    with serving(_Handler) as server:
        yield server


@pytest.fixture
def proxy(upstream: ThreadingHTTPServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", upstream.server_address[1]) as running:
        yield running


def _get(proxy: FaultProxy, timeout: float = 5.0) -> httpx.Response:
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        return client.get(f"{proxy.base_url}/x")


def test_passes_through(proxy: FaultProxy) -> None:
    with httpx.Client(timeout=5, trust_env=False) as client:
        for _ in range(3):  # keep-alive: one connection, three requests
            assert client.get(f"{proxy.base_url}/x").content == BODY
    assert proxy.connections == 1


def test_refuse_closes_new_and_open_connections_until_healed(proxy: FaultProxy) -> None:
    with httpx.Client(timeout=5, trust_env=False) as client:
        assert client.get(f"{proxy.base_url}/x").status_code == 200
        proxy.refuse()
        with pytest.raises(httpx.TransportError):
            client.get(f"{proxy.base_url}/x")
        proxy.heal()
        assert client.get(f"{proxy.base_url}/x").content == BODY


def test_drop_after_cuts_one_response_then_heals_itself(proxy: FaultProxy) -> None:
    proxy.drop_after(50_000)
    with pytest.raises(httpx.RemoteProtocolError):
        _get(proxy)
    assert proxy.dropped == 1
    assert _get(proxy).content == BODY


def test_drop_after_always_cuts_every_response(proxy: FaultProxy) -> None:
    proxy.drop_after(1000, always=True)
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError):
            _get(proxy)
    assert proxy.dropped == 2
    proxy.heal()
    assert _get(proxy).content == BODY


def test_delay_holds_requests_past_a_read_timeout(proxy: FaultProxy) -> None:
    proxy.delay(0.5)
    with pytest.raises(httpx.ReadTimeout):
        _get(proxy, timeout=0.2)
    started = time.monotonic()
    assert _get(proxy).content == BODY
    assert time.monotonic() - started >= 0.5


def test_stop_releases_the_port(upstream: ThreadingHTTPServer) -> None:
    proxy = FaultProxy("127.0.0.1", upstream.server_address[1]).start()
    url = proxy.base_url
    proxy.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/x", timeout=2, trust_env=False)
