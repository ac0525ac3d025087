"""A fault-injecting TCP proxy on 127.0.0.1, for tests, benches and the demo (stdlib only).

    with FaultProxy("127.0.0.1", node.port) as proxy:
        client = make_http_client(proxy.base_url, auth)   # passes through
        proxy.drop_after(2000)     # cut the next response stream after 2000 bytes (once)
        proxy.refuse()             # close every new (and open) connection at once
        proxy.delay(2.0)           # hold each request 2 s before forwarding it
        proxy.heal()               # back to plain pass-through

Faults act on bytes, not on HTTP: a cut response looks to the client exactly like a parent that
died mid-answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType

_CHUNK = 65536


@dataclass
class _Mode:
    refuse: bool = False
    drop_after: int | None = None
    drop_always: bool = False
    delay: float = 0.0


class FaultProxy:
    """Forwards TCP connections from a free loopback port to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listen_port = listen_port
        self._mode = _Mode()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self.connections = 0
        """Connections accepted so far (refused ones included)."""
        self.dropped = 0
        """Connections cut by :meth:`drop_after`."""

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        if self._listener is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:{port}``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Listen and start forwarding (returns self)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._listen_port))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listener = listener
        self._spawn(self._accept_loop, "proxy-accept")
        return self

    def stop(self) -> None:
        """Stop listening, cut every connection and wait for the worker threads."""
        self._stopping.set()
        self._close_all()
        for thread in list(self._threads):
            thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- faults ---------------------------------------------------------------------------------

    def refuse(self, *, existing: bool = True) -> None:
        """Close new connections at once (and the open ones too unless ``existing=False``)."""
        with self._lock:
            self._mode = _Mode(refuse=True)
        if existing:
            self._close_all()

    def drop_after(self, n_bytes: int, *, always: bool = False) -> None:
        """Cut a response stream after ``n_bytes`` bytes: the next one only, or every one."""
        with self._lock:
            self._mode = _Mode(drop_after=n_bytes, drop_always=always)

    def delay(self, seconds: float) -> None:
        """Hold every request ``seconds`` before forwarding it."""
        with self._lock:
            self._mode = _Mode(delay=seconds)

    def heal(self) -> None:
        """Plain pass-through again (open connections keep working)."""
        with self._lock:
            self._mode = _Mode()

    # --- plumbing -------------------------------------------------------------------------------

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with self._lock:
                refuse = self._mode.refuse
            if refuse:
                _hard_close(conn)
                continue
            self._spawn(self._serve, "proxy-conn", conn)

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            _hard_close(client)
            return
        upstream.settimeout(None)
        client.settimeout(None)
        with self._lock:
            self._sockets.update((client, upstream))
        self._spawn(self._pump, "proxy-up", client, upstream, False)
        self._pump(upstream, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        """Copy ``src`` to ``dst``; ``downstream`` is the response direction (drops apply)."""
        sent = 0
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                with self._lock:
                    mode = self._mode
                if not downstream and mode.delay:
                    time.sleep(mode.delay)
                if downstream and mode.drop_after is not None:
                    room = mode.drop_after - sent
                    if len(data) > room:
                        dst.sendall(data[: max(room, 0)])
                        self._drop(mode)
                        break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass  # the other side went away, or we cut it: the copy ends
        finally:
            self._forget(src, dst)

    def _drop(self, mode: _Mode) -> None:
        with self._lock:
            self.dropped += 1
            if not mode.drop_always and self._mode is mode:
                self._mode = _Mode()

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._sockets.discard(sock)
        for sock in socks:
            _hard_close(sock)

    def _close_all(self) -> None:
        with self._lock:
            socks, self._sockets = list(self._sockets), set()
        for sock in socks:
            _hard_close(sock)


def _hard_close(sock: socket.socket) -> None:
    """Close at once (shutdown wakes a thread blocked in recv on it)."""
    with contextlib.suppress(OSError):  # already closed or never connected
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
