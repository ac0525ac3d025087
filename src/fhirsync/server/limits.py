"""ASGI middlewares that refuse requests the node cannot take: bodies over the configured size
(413) and URLs holding a NUL character (400)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhirsync.server.error_responses import render


class BodySizeLimit:
    """Answers 413 when Content-Length, or the streamed body, exceeds ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        message = f"Request body exceeds {self.max_bytes} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await render(path, 413, message)(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await render(path, 413, message)(scope, receive, send)


class NulInUrl:
    """Answers 400 when the path or the query string holds a NUL character.

    No record id, category or filter contains one, and PostgreSQL cannot even compare text with
    it: a ``%00`` reaching a query there was a 500 with a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = str(scope.get("path", ""))
            query = bytes(scope.get("query_string", b""))
            if "\x00" in path or b"\x00" in query or b"%00" in query:
                await render(path, 400, "The URL holds a NUL character (%00)")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    """Internal signal: the streamed body passed the limit."""
