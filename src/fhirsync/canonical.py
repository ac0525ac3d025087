"""Canonical JSON bytes and content hashes.

Two nodes holding the same record must compute the same hash, whatever key order or server
bookkeeping (``meta.versionId``, ``meta.lastUpdated``, REST ``links``/``auditInfo``) they add.
So the hash is taken over the *unified* body: bookkeeping removed, keys sorted.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson

# ``id``/``uuid`` are the record key, kept in their own column.
_REST_BOOKKEEPING = frozenset({"id", "uuid", "links", "auditInfo", "display", "resourceVersion"})
_META_BOOKKEEPING = frozenset({"versionId", "lastUpdated"})


def dumps(body: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes (or text)."""
    return orjson.loads(data)


def unify(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without server bookkeeping, for comparing copies held by different nodes."""
    out = {k: v for k, v in body.items() if k not in _REST_BOOKKEEPING}
    meta = out.get("meta")
    if isinstance(meta, Mapping):
        rest = {k: v for k, v in meta.items() if k not in _META_BOOKKEEPING}
        if rest:
            out["meta"] = rest
        else:
            del out["meta"]
    return out


_scope = threading.local()


@contextmanager
def hashes_remembered() -> Iterator[None]:
    """Within this block (on this thread), each body object is hashed once.

    A page's commit hashes every pulled body three times (the conflict decision, the agreed
    version, the write) and stores its unified bytes as the agreed version; here the later calls
    reuse the first. The bodies must not change inside
    the block: they are the page's fetched, validated bodies, which nothing mutates.
    """
    outer = getattr(_scope, "memo", None)
    _scope.memo = outer if outer is not None else {}
    try:
        yield
    finally:
        _scope.memo = outer


def unified_bytes(body: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes of the unified body (what :func:`content_hash` hashes)."""
    return _unified(body)[0]


def content_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the unified canonical body."""
    return _unified(body)[1]


def _unified(body: Mapping[str, Any]) -> tuple[bytes, str]:
    memo: dict[int, tuple[Mapping[str, Any], bytes, str]] | None = getattr(_scope, "memo", None)
    if memo is not None:
        # The memo holds the body itself, so its id cannot be reused while the block lasts.
        hit = memo.get(id(body))
        if hit is not None and hit[0] is body:
            return hit[1], hit[2]
    data = dumps(unify(body))
    digest = hashlib.sha256(data).hexdigest()
    if memo is not None:
        memo[id(body)] = (body, data, digest)
    return data, digest
