"""The shared httpx client factory and the ONE translation of httpx outcomes into fhirsync errors.

Every remote call of ``clients/`` and ``feed/`` goes through :func:`request`, so no httpx type or
exception leaves those packages (STYLE principle 4):

================================================  =========================================
httpx outcome                                     fhirsync error (cause chained)
================================================  =========================================
ConnectError, ReadError, RemoteProtocolError, ...  ConnectionFailed
any timeout (connect, read, write, pool)           RequestTimeout
5xx, 429                                           ServerUnavailable (try again later)
408                                                RequestTimeout
401                                                Unauthenticated (wrong parent credentials)
403                                                Forbidden
404                                                RecordNotFound
410                                                RecordGone
413                                                PayloadTooLarge
other 4xx (and unexpected 3xx)                     RemoteRejected(status=...) with the remote's
                                                   own message (OperationOutcome diagnostics or
                                                   the REST ``{"error": {"message"}}``)
================================================  =========================================
"""

from __future__ import annotations

import functools
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpcore
import httpx
import orjson

from fhirsync.clients.sockets import TrackingBackend
from fhirsync.errors import (
    ConfigurationError,
    ConnectionFailed,
    FhirsyncError,
    Forbidden,
    PayloadTooLarge,
    RecordGone,
    RecordNotFound,
    RemoteRejected,
    RequestTimeout,
    ServerUnavailable,
    Unauthenticated,
)

ACCEPT = "application/fhir+json, application/json;q=0.9, application/atom+xml;q=0.8"
USER_AGENT = "fhirsync"
DEFAULT_POOL_SIZE = 16
SEND_BUFFER_BYTES = 4 * 1024 * 1024
"""Socket send buffer: a pushed Bundle (about 800 KB for 500 Patients) is handed to the kernel in
one call. With the default buffer the sending thread wakes for every slice the remote reads and
must win the interpreter lock back each time, from a main thread busy preparing the next batch."""
_MESSAGE_LIMIT = 300
"""Longest remote message kept in an error (remote error texts are short; never a record body)."""


def make_http_client(
    base_url: str,
    auth: tuple[str, str] | None,
    *,
    connect_timeout: float = 15.0,
    read_timeout: float = 30.0,
    pool_size: int = DEFAULT_POOL_SIZE,
    ca_file: Path | None = None,
) -> httpx.Client:
    """A keep-alive client for one remote base URL, with timeouts and Accept headers.

    Redirects are not followed (as in Sync 2.0: a redirect means a misconfigured base URL), and
    proxy environment variables are ignored so a loopback parent is always reached directly.
    ``https://`` URLs go through a verifying transport made on the first such request; it trusts
    the certificate authorities of ``ca_file`` (PEM) when given, else the usual public ones.
    """
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        auth=auth,
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        headers={"Accept": ACCEPT, "User-Agent": USER_AGENT},
        follow_redirects=False,
        trust_env=False,
        # ``verify=False`` is inert here: this transport only carries http:// URLs (https ones
        # are mounted below), and it spares building a verifying context nobody would use.
        transport=_transport(pool_size, verify=False),
        mounts={
            "https://": LazyTransport(
                lambda: _transport(pool_size, verify=_tls_context(str(ca_file or "")))
            )
        },
    )


def _transport(pool_size: int, *, verify: ssl.SSLContext | bool) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(
        verify=verify,
        limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
        trust_env=False,
        socket_options=[(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)],
    )
    # Connections a stopping server can cut (clients/sockets.py). httpx 0.28 takes no network
    # backend, so its pool's is replaced; tests/unit/clients/test_sockets.py fails if that
    # stops working with a new httpx.
    pool = transport._pool
    assert isinstance(pool, httpcore.ConnectionPool), type(pool)  # trust_env=False: no proxy
    pool._network_backend = TrackingBackend()
    return transport


class LazyTransport(httpx.BaseTransport):
    """A transport made by ``make`` on the first request it carries (then kept).

    The verifying TLS context loads certifi's CA bundle (~18 ms, once per process): a run whose
    parent is an http:// URL never needs it, and every command is a new process.
    """

    def __init__(self, make: Callable[[], httpx.BaseTransport]) -> None:
        self._make = make
        self._made: httpx.BaseTransport | None = None
        self._lock = threading.Lock()

    @property
    def made(self) -> bool:
        """True once the real transport exists."""
        return self._made is not None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Carry ``request`` through the real transport, making it first if need be."""
        with self._lock:
            if self._made is None:
                self._made = self._make()
            made = self._made
        return made.handle_request(request)

    def close(self) -> None:
        """Close the real transport, if it was ever made."""
        with self._lock:
            if self._made is not None:
                self._made.close()


@functools.cache
def _tls_context(ca_file: str) -> ssl.SSLContext:
    # One verifying context per trust setting for every client of the process (certifi's CA
    # bundle, as httpx builds it, when no file is given): loading a bundle costs ~20-40 ms per
    # client, and a run makes several.
    if not ca_file:
        return httpx.create_ssl_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"parent_ca_file: {ca_file} holds no usable PEM certificate ({exc})",
            field="parent_ca_file",
        ) from exc


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Run an httpx call, re-raising its exceptions as fhirsync errors (chained)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise RequestTimeout(f"{where} did not answer in time ({type(exc).__name__})") from exc
    except httpx.UnsupportedProtocol as exc:
        raise ConfigurationError(f"{where}: the URL must start with http:// or https://") from exc
    except httpx.TransportError as exc:
        # The reason is the socket's or TLS's own text ("Connection refused", "certificate
        # verify failed: self-signed certificate"): what an administrator needs to act on.
        reason = str(exc) or type(exc).__name__
        hint = ""
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            hint = " (a certificate from the hospital's own authority: set parent_ca_file)"
        elif "WRONG_VERSION_NUMBER" in reason:
            hint = " (the server speaks plain http there: use an http:// URL)"
        raise ConnectionFailed(f"cannot reach {where}: {reason}{hint}") from exc
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"{where}: invalid URL ({exc})") from exc
    except httpx.HTTPError as exc:
        # DecodingError, TooManyRedirects, stream errors: the remote sent something unusable.
        raise ServerUnavailable(
            f"{where} sent an unusable response ({type(exc).__name__})"
        ) from exc


def request(
    http: httpx.Client,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Send one request and read the whole response; transport failures become fhirsync errors.

    The status is NOT checked here: call :func:`error_for_response` (or :func:`raise_for_status`)
    so each caller decides what a 404 means to it.
    """
    where = _where(http, url)
    with translated(where):
        return http.request(method, url, params=params, content=content, headers=headers)


def status_of(
    url: str,
    path: str,
    *,
    timeout: float,
    auth: tuple[str, str] | None = None,
    ca_file: Path | None = None,
) -> int:
    """The HTTP status of ``GET {url}{path}`` with the same TLS trust as sync; RequestTimeout or
    another TransientError when there is no answer."""
    with make_http_client(
        url, auth, connect_timeout=timeout, read_timeout=timeout, pool_size=1, ca_file=ca_file
    ) as http:
        return request(http, "GET", path).status_code


def raise_for_status(response: httpx.Response, **record: str | None) -> httpx.Response:
    """Return ``response`` when it is 2xx, else raise the mapped fhirsync error."""
    error = error_for_response(response, **record)
    if error is not None:
        raise error
    return response


def error_for_response(
    response: httpx.Response, *, category: str | None = None, uuid: str | None = None
) -> FhirsyncError | None:
    """The fhirsync error a response status stands for, or None for 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    return error_for_status(
        status,
        remote_message(response.content),
        where=_where_response(response),
        category=category,
        uuid=uuid,
    )


def error_for_status(
    status: int,
    message: str,
    *,
    where: str = "the remote",
    category: str | None = None,
    uuid: str | None = None,
) -> FhirsyncError:
    """The fhirsync error of a non-2xx status (also used for the per-entry status of a Bundle)."""
    text = f"{where} answered {status}: {message}" if message else f"{where} answered {status}"
    if status >= 500 or status == 429:
        return ServerUnavailable(text)
    if status == 408:
        return RequestTimeout(text)
    if status == 401:
        return Unauthenticated(f"{where} refused the credentials (401)")
    if status == 403:
        return Forbidden(text)
    if status == 413:
        return PayloadTooLarge(text)
    if status == 404:
        return RecordNotFound(text, category=category, uuid=uuid)
    if status == 410:
        return RecordGone(text, category=category, uuid=uuid)
    return RemoteRejected(text, status=status, category=category, uuid=uuid)


def remote_message(body: bytes) -> str:
    """The remote's own error text: OperationOutcome diagnostics, REST ``error.message``, or ''."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return ""
    return _message_of(data)[:_MESSAGE_LIMIT] if isinstance(data, dict) else ""


def outcome_message(outcome: Any) -> str:
    """The diagnostics (and location) of an OperationOutcome, '' when it has none."""
    if not isinstance(outcome, dict):
        return ""
    issues = outcome.get("issue")
    first = issues[0] if isinstance(issues, list) and issues else None
    if not isinstance(first, dict):
        return ""
    text = str(first.get("diagnostics") or first.get("code") or "")
    where = first.get("expression")
    if isinstance(where, list) and where:
        text += f" (at {where[0]})"
    return text


def _message_of(data: dict[str, Any]) -> str:
    if data.get("resourceType") == "OperationOutcome":
        return outcome_message(data)
    error = data.get("error")
    if isinstance(error, dict):
        field = f" (field {error['field']})" if error.get("field") else ""
        return f"{error.get('message', '')}{field}"
    return ""


def _where(http: httpx.Client, url: str) -> str:
    # Name the remote by scheme, host and port only: paths and queries may hold record ids.
    target = httpx.URL(url) if url.startswith(("http://", "https://")) else http.base_url
    return _origin(target)


def _where_response(response: httpx.Response) -> str:
    try:
        return _origin(response.request.url)
    except RuntimeError:  # a Response built without a request (tests)
        return "the remote"


def _origin(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"
