"""Canonical JSON bytes and content hashes.

Two nodes holding the same record must compute the same hash, whatever key order or server
bookkeeping (``meta.versionId``, ``meta.lastUpdated``, REST ``links``/``auditInfo``) they add.
So the hash is taken over the *unified* body: bookkeeping removed, keys sorted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
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


def content_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the unified canonical body."""
    return hashlib.sha256(dumps(unify(body))).hexdigest()
