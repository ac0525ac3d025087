"""The http client's transports: plain http never builds a TLS context, https always verifies.

Real servers on 127.0.0.1 (stdlib ``http.server``, one of them wrapped in TLS with a self-signed
certificate made by the ``openssl`` command).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhirsync.clients.http import LazyTransport, make_http_client, request
from fhirsync.errors import ConfigurationError, ConnectionFailed
from fhirsync.testing.stub_http import QuietHandler, serving
from fhirsync.testing.tls import openssl_available, self_signed_certificate


class _Ok(QuietHandler):
    def do_GET(self) -> None:
        self.answer(200, b"{}")


@pytest.fixture
def plain_port() -> Iterator[int]:
    with serving(_Ok) as server:
        yield server.server_address[1]


@pytest.fixture
def self_signed(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """(port, certificate) of a TLS server on 127.0.0.1 with a self-signed certificate."""
    if not openssl_available():
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = self_signed_certificate(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with serving(_Ok, tls) as server:
        yield server.server_address[1], cert


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
    self_signed: tuple[int, Path],
) -> None:
    self_signed_port = self_signed[0]
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
    self_signed: tuple[int, Path],
) -> None:
    self_signed_port = self_signed[0]
    # Control for the test above: the TLS server does answer a client that skips verification,
    # so the refusal there came from verification, not from a broken server.
    with httpx.Client(verify=False) as plain:
        assert plain.get(f"https://127.0.0.1:{self_signed_port}/x").json() == {}


def test_a_ca_file_makes_the_server_trusted(self_signed: tuple[int, Path]) -> None:
    port, cert = self_signed
    client = make_http_client(f"https://127.0.0.1:{port}/base", None, ca_file=cert)
    try:
        assert request(client, "GET", "/x").json() == {}
    finally:
        client.close()


def test_an_unusable_ca_file_names_the_setting(
    self_signed: tuple[int, Path], tmp_path: Path
) -> None:
    garbage = tmp_path / "not-a-certificate.pem"
    garbage.write_text("hello")
    client = make_http_client(f"https://127.0.0.1:{self_signed[0]}/base", None, ca_file=garbage)
    try:
        with pytest.raises(ConfigurationError) as info:
            request(client, "GET", "/x")
    finally:
        client.close()
    assert info.value.field == "parent_ca_file"


def test_https_to_a_plain_http_server_says_the_server_speaks_http(plain_port: int) -> None:
    # "[SSL: WRONG_VERSION_NUMBER] wrong version number" alone sends an administrator after
    # certificates; the parent URL just says https:// for a server that speaks http.
    client = make_http_client(f"https://127.0.0.1:{plain_port}", None)
    try:
        with pytest.raises(ConnectionFailed, match=r"speaks plain http"):
            request(client, "GET", "/x")
    finally:
        client.close()
