"""What a REST request asks for: the category, who writes, the view and the body."""

from __future__ import annotations

from typing import Any

import orjson

from fhirsync import categories as cats
from fhirsync.categories import Category
from fhirsync.errors import InvalidResource
from fhirsync.service.rest_render import VIEWS, View

__all__ = ["category_for", "parse_body", "parse_view"]


def category_for(resource: str) -> Category:
    """The category served at ``/ws/rest/v1/{resource}``; UnknownResourceType if none."""
    return cats.for_rest_resource(resource)


def parse_view(value: str | None, default: View) -> View:
    """The representation asked for by ``?v=``; InvalidResource naming ``v`` if unsupported."""
    if value is None or value == "":
        return default
    lowered = value.lower()
    for view in VIEWS:
        if view == lowered:
            return view
    raise InvalidResource(f"v must be one of {', '.join(VIEWS)}", element="v")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; InvalidResource otherwise."""
    try:
        value = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise InvalidResource("body is not valid JSON", detail=str(exc)) from exc
    if not isinstance(value, dict):
        raise InvalidResource("body must be a JSON object")
    return value
