"""Every path into a JSON value, for tests that change resources one element at a time."""

from __future__ import annotations

from typing import Any


def json_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The key/index path of every element under ``node``, parents before children."""
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict | list):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            out.append((*prefix, key))
            out += json_paths(child, (*prefix, key))
    return out
