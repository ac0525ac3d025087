"""Small real HTTP servers for tests: a stdlib handler served on 127.0.0.1 in a thread.

For remotes that a test needs to behave in one precise way (a Java feed, a failing or slow
parent, TLS with a self-signed certificate); a fhirsync node is served by ``testing.servers``.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """Keep-alive (HTTP/1.1, as a real remote), no request log, and :meth:`answer`."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without TCP_NODELAY each keep-alive answer waits
    # for the client's delayed ACK (~40 ms), which made a 30-category pull take seconds.
    disable_nagle_algorithm = True

    def answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """Send ``body`` with ``status``."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> Iterator[ThreadingHTTPServer]:
    """``handler`` served on 127.0.0.1 (a free port; over ``tls`` if given) for the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
