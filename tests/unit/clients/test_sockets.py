"""A stopping server cuts its connections to a remote that never answers (clients/sockets.py).

Real servers on 127.0.0.1: one that reads a request and never answers, over plain http and over
TLS with a self-signed certificate (made by the ``openssl`` command).
"""

from __future__ import annotations

import gc
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirsync.clients import sockets
from fhirsync.clients.http import make_http_client, request
from fhirsync.errors import ConnectionFailed, FhirsyncError
from fhirsync.testing.stub_http import QuietHandler, serving
from fhirsync.testing.tls import openssl_available, self_signed_certificate

_release = threading.Event()


class _Hung(QuietHandler):
    def do_GET(self) -> None:
        if self.path == "/ok":
            self.answer(200, b"{}")
        else:
            _release.wait(60)


@pytest.fixture
def hung() -> Iterator[int]:
    _release.clear()
    with serving(_Hung) as server:
        try:
            yield server.server_address[1]
        finally:
            _release.set()


@pytest.fixture
def hung_tls(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if not openssl_available():
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = self_signed_certificate(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    _release.clear()
    with serving(_Hung, tls) as server:
        try:
            yield server.server_address[1], cert
        finally:
            _release.set()


def _cut_while_waiting(url: str, ca_file: Path | None = None) -> FhirsyncError | None:
    """A GET of ``url`` that waits for an answer, cut after a moment; what the GET raised."""
    client = make_http_client(url, None, read_timeout=30.0, ca_file=ca_file)
    raised: list[FhirsyncError | None] = [None]

    def get() -> None:
        try:
            request(client, "GET", "/x")
        except FhirsyncError as exc:
            raised[0] = exc

    waiting = threading.Thread(target=get)
    cuts = 0
    try:
        waiting.start()
        deadline = time.monotonic() + 10
        while waiting.is_alive():
            assert time.monotonic() < deadline, "the request still waits"
            cuts += sockets.cut_url(url)
            waiting.join(0.1)
    finally:
        waiting.join(30)
        client.close()
    assert cuts
    return raised[0]


def test_a_request_waiting_on_a_hung_remote_fails_at_once_when_cut(hung: int) -> None:
    url = f"http://127.0.0.1:{hung}"
    assert isinstance(_cut_while_waiting(url), ConnectionFailed)
    gc.collect()  # a client another test dropped unclosed may have used the same port
    assert sockets.cut_url(url) == 0  # closed connections leave the registry


def test_a_tls_connection_is_cut_too(hung_tls: tuple[int, Path]) -> None:
    port, cert = hung_tls
    url = f"https://127.0.0.1:{port}"
    assert isinstance(_cut_while_waiting(url, cert), ConnectionFailed)
    gc.collect()
    assert sockets.cut_url(url) == 0


# Dropping a client unclosed leaves its socket to the garbage collector, which says so.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_client_dropped_unclosed_is_not_kept_alive(hung: int) -> None:
    url = f"http://127.0.0.1:{hung}"
    client = make_http_client(url, None)
    assert request(client, "GET", "/ok").status_code == 200  # kept alive in the pool
    assert sockets.cut_url(url) == 1
    del client
    gc.collect()
    assert sockets.cut_url(url) == 0


def test_cutting_one_remote_leaves_the_others_alone(hung: int) -> None:
    assert sockets.cut("127.0.0.1", hung + 1 if hung < 65535 else hung - 1) == 0
