"""The open connections of this process to each remote, so that a stopping server can cut them.

A run waiting on a parent that accepted the connection and never answers is blocked in a socket
read until ``http_read_timeout`` (30 s by default), and no flag or signal reaches it there: a
``fhirsync serve`` asked to stop (SIGTERM) waited that long, or was killed by the init system
with its runs recorded as still running. :func:`cut` shuts the sockets down instead: the blocked
read returns at once, the request fails as a lost connection (ConnectionFailed), and the run
ends the way it ends when the network drops (nothing half-written, markers where they were).

Every transport of :mod:`fhirsync.clients.http` connects through :class:`TrackingBackend`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import typing
import weakref
from urllib.parse import urlsplit

import httpcore

_lock = threading.Lock()
_open: dict[tuple[str, int], weakref.WeakSet[_TrackedStream]] = {}
"""Weak: a client dropped without being closed must not be kept alive (with its socket) here."""


def cut_url(url: str) -> int:
    """:func:`cut` the connections to the server of ``url`` (its scheme, host and port)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return cut(parts.hostname or "", port)


def cut(host: str, port: int) -> int:
    """Shut down every open connection of this process to ``host:port``; how many there were.

    A request waiting on one of them fails at once as a lost connection; the connection is
    closed by its owner as after any such failure.
    """
    with _lock:
        streams = list(_open.get((host.lower(), port), ()))
    for stream in streams:
        stream.shut_down()
    return len(streams)


class TrackingBackend(httpcore.NetworkBackend):
    """httpcore's synchronous backend, keeping each connection where :func:`cut` finds it."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect as httpcore does, and keep the connection in the registry until closed."""
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _TrackedStream(stream, (host.lower(), port))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Unix sockets are not tracked (no parent is reached through one)."""
        return self._inner.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        """As httpcore's backend."""
        self._inner.sleep(seconds)


class _TrackedStream(httpcore.NetworkStream):
    """A connection that is in the registry from its connect to its close."""

    def __init__(self, inner: httpcore.NetworkStream, key: tuple[str, int]) -> None:
        self._inner = inner
        self._key = key
        with _lock:
            _open.setdefault(key, weakref.WeakSet()).add(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._forget()
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The TLS stream owns the socket from now on: it takes this one's place.
        tls = self._inner.start_tls(ssl_context, server_hostname, timeout)
        self._forget()
        return _TrackedStream(tls, self._key)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)

    def shut_down(self) -> None:
        """End both directions of the connection: a read waiting on it returns at once."""
        sock = self._inner.get_extra_info("socket")
        if not isinstance(sock, socket.socket):
            return
        # OSError: already closed, or never fully connected: nothing waits on it.
        with contextlib.suppress(OSError):
            # socket.socket's own shutdown, also for a TLS socket: ssl.SSLSocket.shutdown would
            # first drop its TLS state, under the feet of the thread reading through it.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _forget(self) -> None:
        with _lock:
            streams = _open.get(self._key)
            if streams is not None:
                streams.discard(self)
                if not streams:
                    del _open[self._key]
