"""Who a write comes from, for the FHIR and REST APIs alike: the node where the change began (its
origin) and how it arrived here (``via``)."""

from __future__ import annotations

from dataclasses import dataclass

from fhirsync import categories as cats
from fhirsync.categories import ORIGIN_HEADER
from fhirsync.errors import Forbidden, RequestError
from fhirsync.store.users import User


@dataclass(frozen=True, slots=True)
class Author:
    """Who a write comes from: the node where the change began, and how it arrived here."""

    origin: str
    via: str | None = None


def author_for(user: User, node_instance_id: str, origin_header: str | None) -> Author:
    """The origin and ``via`` of a write by ``user``.

    An admin edits locally (origin = this node). A child account pushes changes that began on it
    or below it: the origin is the header it sends (a valid instance id), else its own instance id.
    """
    if user.role == "admin":
        return Author(node_instance_id)
    if user.role == "child" and user.instance_id:
        claimed = origin_header.strip() if origin_header else ""
        origin = claimed or user.instance_id
        if not cats.is_valid_id(origin):
            raise RequestError(f"{ORIGIN_HEADER} is not a valid instance id")
        return Author(origin, f"child:{user.instance_id}")
    raise Forbidden(f"user {user.name!r} may not write records")
