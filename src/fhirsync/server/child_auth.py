"""Binding child accounts to instance ids, and the ``sync2.json`` whitelist to those accounts.

Sync 2.0 trusted a self-declared instance id (spec §12). Here a child account (``fhirsync user add
... --role child --instance-id ID``) IS its instance id:

- with ``whitelist.enabled``, a child account whose instance id is not in ``whitelist.instanceIds``
  may not write or use the proxy (403);
- a child may name the origin of a change it relays (``X-Fhirsync-Origin``: its own id, or a node
  below it), but never the id of ANOTHER child account of this node, nor this node's own id (403).

:class:`ChildGuard` applies these rules to every write request before it reaches a route, so the
FHIR and REST services need no change; the proxy route calls :func:`check_claim` for the wrapper's
``instanceId`` too.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from fhirsync.categories import ORIGIN_HEADER
from fhirsync.errors import Forbidden, Unauthenticated
from fhirsync.server.deps import NodeContext
from fhirsync.server.error_responses import render
from fhirsync.settings import NodeConfig
from fhirsync.store import children
from fhirsync.store.engine import Database
from fhirsync.store.users import User

_ORIGIN = ORIGIN_HEADER.lower().encode()
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_GUARDED_PREFIXES = ("/ws/fhir2", "/ws/rest/")


def check_whitelist(user: User, config: NodeConfig) -> None:
    """Forbidden when the whitelist is on and ``user`` is a child whose id is not listed."""
    whitelist = config.sync2.whitelist
    if user.role != "child" or not whitelist.enabled:
        return
    if user.instance_id not in whitelist.instance_ids:
        raise Forbidden(f"instance {user.instance_id!r} is not on this node's whitelist")


def claim_needs_lookup(user: User, claimed: str | None) -> bool:
    """True when :func:`check_claim` may read the database (a child naming another origin)."""
    return user.role == "child" and bool(claimed) and claimed != user.instance_id


def check_claim(user: User, config: NodeConfig, db: Database, claimed: str | None) -> None:
    """Forbidden when child ``user`` claims this node's id or another child account's id."""
    if not claimed or not claim_needs_lookup(user, claimed):
        return
    if claimed == config.instance_id:
        raise Forbidden(f"a child may not act as this node ({claimed!r})")
    with db.read() as conn:
        owner = children.child_instance_ids(conn).get(claimed)
    if owner is not None:
        raise Forbidden(f"instance id {claimed!r} belongs to another child account")


def check_child_write(user: User, config: NodeConfig, db: Database, claimed: str | None) -> None:
    """Both checks, in the order a caller should learn about them."""
    check_whitelist(user, config)
    check_claim(user, config, db, claimed)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class ChildGuard:
    """ASGI middleware: refuse writes by child accounts that break the binding rules (403).

    Requests without credentials, with wrong ones, or by admins pass through untouched: the route's
    own authentication answers them (401), so this never changes what a non-child sees.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in _READ_METHODS
            or not str(scope["path"]).startswith(_GUARDED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        node = scope["app"].state.node if "app" in scope else None
        if header is None or node is None:
            await self.app(scope, receive, send)
            return
        raw_claim = _header(scope, _ORIGIN)
        claimed = raw_claim.strip() if raw_claim else None
        user = node.authenticator.remembered(header)
        try:
            if user is not None and not claim_needs_lookup(user, claimed):
                check_whitelist(user, node.config)  # no I/O: answered on the event loop
            else:
                # One worker-thread hop for both (a pushed batch waits for it). The verification
                # is cached by the authenticator, so the route's own check costs nothing more.
                await run_in_threadpool(_check, node, header, claimed)
        except Unauthenticated:
            await self.app(scope, receive, send)
            return
        except Forbidden as exc:
            await render(str(scope["path"]), 403, exc.message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _check(node: NodeContext, header: str, claimed: str | None) -> None:
    """Authenticate ``header`` and apply the binding rules: Unauthenticated or Forbidden."""
    user = node.authenticator.authenticate_header(header)
    check_child_write(user, node.config, node.db, claimed)
