"""``POST /ws/rest/sync2``: the Sync 2.0 wrapped-request proxy (spec §5.7), made safe.

Java children wrap every request to their parent in ``{instanceId, clientName, className,
request: {method, url, body}}``. Two flaws of the original are fixed (spec §12, §13 flaw 20):

- the inner URL must point at THIS node's own base URL (the configured ``base_url`` or the host the
  request came to); any other URL is refused with 400, so the proxy cannot reach another host;
- the inner request runs in-process (the ASGI app calls itself, no HTTP hop) with the CALLER's
  credentials, never a local superuser's: a viewer stays a viewer, a child stays a child, and the
  child-account rules of :mod:`fhirsync.server.child_auth` apply to it as to a direct request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from fhirsync.categories import ORIGIN_HEADER
from fhirsync.errors import Forbidden, RequestError
from fhirsync.server import child_auth
from fhirsync.server.deps import CurrentUser, NodeDep

PROXY_PATH = "/ws/rest/sync2"
router = APIRouter()

_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Response headers of the inner answer worth handing back to the caller.
_PASSED_HEADERS = ("content-type", "etag", "location", "last-modified")


@dataclass(frozen=True, slots=True)
class Wrapper:
    """A parsed RequestWrapper (spec §5.7)."""

    instance_id: str
    client_name: str
    class_name: str
    method: str
    url: str
    body: bytes | None


def _text(data: dict[str, Any], name: str, where: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"wrapper field {where} must be a non-empty string")
    return value.strip()


def parse_wrapper(raw: bytes) -> Wrapper:
    """The wrapper in ``raw``; RequestError (400) naming what is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"Incorrect RequestWrapper JSON given: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("request"), dict):
        raise RequestError("Incorrect RequestWrapper JSON given: 'request' object missing")
    inner: dict[str, Any] = data["request"]
    method = _text(inner, "method", "request.method").upper()
    if method not in _METHODS:
        raise RequestError(f"request.method {method!r} is not GET, POST, PUT or DELETE")
    body = inner.get("body")
    if body is not None and not isinstance(body, str | dict):
        raise RequestError("request.body must be a JSON string or object")
    encoded = orjson.dumps(body) if isinstance(body, dict) else body.encode() if body else None
    return Wrapper(
        instance_id=_text(data, "instanceId", "instanceId"),
        client_name=_text(data, "clientName", "clientName"),
        class_name=_text(data, "className", "className"),
        method=method,
        url=_text(inner, "url", "request.url"),
        body=None if method in ("GET", "DELETE") else encoded,
    )


def _origin_of(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError as exc:
        raise RequestError(f"request.url {url!r} has an invalid port") from exc
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def inner_path(url: str, own_bases: list[str]) -> str:
    """The path and query of ``url`` if it points at one of ``own_bases``; else RequestError."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        raise RequestError("request.url must be an absolute http(s) URL of this node")
    if parts.username is not None or parts.password is not None:
        raise RequestError("request.url must not carry credentials")
    scheme, host, port, path = _origin_of(url)
    for base in own_bases:
        b_scheme, b_host, b_port, b_path = _origin_of(base)
        if (scheme, host, port) == (b_scheme, b_host, b_port) and (
            path == b_path or path.startswith(b_path + "/")
        ):
            rest = path[len(b_path) :] or "/"
            # The inner client resolves "." and ".." segments, so "/ws/../metrics" would leave /ws/.
            dotted = any(segment in (".", "..") for segment in rest.split("/"))
            if dotted or rest.rstrip("/") == PROXY_PATH or not rest.startswith("/ws/"):
                raise RequestError("request.url must name an API of this node under /ws/")
            return rest + (f"?{parts.query}" if parts.query else "")
    raise RequestError("request.url does not point at this node; the proxy only forwards to itself")


def _own_bases(request: Request, configured: str) -> list[str]:
    host = request.headers.get("host")
    bases = [configured]
    if host:
        bases.append(f"{request.url.scheme}://{host}")
    return bases


def _check_caller(wrapper: Wrapper, node: NodeDep, user: CurrentUser) -> None:
    whitelist = node.config.sync2.whitelist
    if user.role == "child":
        child_auth.check_child_write(user, node.config, node.db, wrapper.instance_id)
    if (
        whitelist.enabled
        and wrapper.instance_id != node.config.instance_id
        and wrapper.instance_id not in whitelist.instance_ids
    ):
        raise Forbidden(f"instance {wrapper.instance_id!r} is not on this node's whitelist")


def _inner_headers(request: Request, wrapper: Wrapper) -> dict[str, str]:
    headers = {"accept": "application/json"}
    auth = request.headers.get("authorization")
    if auth:
        headers["authorization"] = auth
    if wrapper.body is not None:
        fhir = wrapper.client_name.lower() == "fhir"
        headers["content-type"] = "application/fhir+json" if fhir else "application/json"
    origin = request.headers.get(ORIGIN_HEADER)
    if origin:
        headers[ORIGIN_HEADER.lower()] = origin
    return headers


@router.post(PROXY_PATH)
async def proxy(request: Request, node: NodeDep, user: CurrentUser) -> Response:
    """Run the wrapped request against this node, as the caller, and answer with its response."""
    wrapper = parse_wrapper(await request.body())
    path = inner_path(wrapper.url, _own_bases(request, node.config.base_url))
    _check_caller(wrapper, node, user)
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url=node.config.base_url) as client:
        inner = await client.request(
            wrapper.method, path, content=wrapper.body, headers=_inner_headers(request, wrapper)
        )
    headers = {k: v for k in _PASSED_HEADERS if (v := inner.headers.get(k)) is not None}
    return Response(inner.content, inner.status_code, headers)
