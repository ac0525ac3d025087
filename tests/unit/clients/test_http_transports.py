"""The http client's transports: plain http never builds a TLS context, https always verifies.

Real servers on 127.0.0.1 (stdlib ``http.server``, one of them wrapped in TLS with a self-signed
certificate made by the ``openssl`` command).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhirsync.clients.http import LazyTransport, make_http_client, request
from fhirsync.errors import ConnectionFailed
from fhirsync.testing.stub_http import QuietHandler, serving


class _Ok(QuietHandler):
    def do_GET(self) -> None:
        self.answer(200, b"{}")


@pytest.fixture
def plain_port() -> Iterator[int]:
    with serving(_Ok) as server:
        yield server.server_address[1]


@pytest.fixture
def self_signed_port(tmp_path: Path) -> Iterator[int]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with serving(_Ok, tls) as server:
        yield server.server_address[1]


def _lazy(client: httpx.Client) -> LazyTransport:
    mounted = [t for t in client._mounts.values() if isinstance(t, LazyTransport)]
    assert len(mounted) == 1
    return mounted[0]


def test_an_http_remote_never_makes_the_tls_transport(plain_port: int) -> None:
    client = make_http_client(f"http://127.0.0.1:{plain_port}/base", None)
    try:
        for _ in range(3):
            assert request(client, "GET", "/x").json() == {}
        assert not _lazy(client).made
    finally:
        client.close()


def test_an_https_url_goes_through_a_verifying_transport_made_on_first_use(
    self_signed_port: int,
) -> None:
    client = make_http_client(f"https://127.0.0.1:{self_signed_port}/base", None)
    try:
        assert not _lazy(client).made
        # The certificate is self-signed: a verifying transport refuses it.
        with pytest.raises(ConnectionFailed):
            request(client, "GET", "/x")
        assert _lazy(client).made
    finally:
        client.close()


def test_the_same_server_is_reached_when_verification_is_not_the_question(
    self_signed_port: int,
) -> None:
    # Control for the test above: the TLS server does answer a client that skips verification,
    # so the refusal there came from verification, not from a broken server.
    with httpx.Client(verify=False) as plain:
        assert plain.get(f"https://127.0.0.1:{self_signed_port}/x").json() == {}
