"""What a REST request asks for: the category, who writes, the view and the body."""

from __future__ import annotations

from typing import Any

import orjson

from fhirsync import categories as cats
from fhirsync.categories import Category
from fhirsync.errors import Forbidden, InvalidResource, RequestError
from fhirsync.service.fhir import Author
from fhirsync.service.rest_render import VIEWS, View
from fhirsync.store.users import User

__all__ = ["ORIGIN_HEADER", "author_for", "category_for", "parse_body", "parse_view"]

ORIGIN_HEADER = "X-Fhirsync-Origin"


def category_for(resource: str) -> Category:
    """The category served at ``/ws/rest/v1/{resource}``; UnknownResourceType if none."""
    return cats.for_rest_resource(resource)


def author_for(user: User, node_instance_id: str, origin_header: str | None) -> Author:
    """The origin and ``via`` of a write by ``user``.

    An admin edits locally (origin = this node). A child account pushes changes that began on it or
    below it: the origin is the header it sends, else its own instance id.
    """
    if user.role == "admin":
        return Author(node_instance_id)
    if user.role == "child" and user.instance_id:
        origin = origin_header.strip() if origin_header else user.instance_id
        if not cats.is_valid_id(origin):
            raise RequestError(f"{ORIGIN_HEADER} is not a valid instance id")
        return Author(origin, f"child:{user.instance_id}")
    raise Forbidden(f"user {user.name!r} may not write records")


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
