"""The REST representation a record is served as (OpenMRS REST v1's ``ref``/``default``/``full``).

What is stored is the body without server bookkeeping (:mod:`fhirsync.service.rest_body`); the
``uuid``, ``display``, state flag, ``links`` and (``full``) ``auditInfo`` are added here, on the way
out only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from fhirsync.categories import REST_BASE, Category
from fhirsync.records import Record
from fhirsync.service.rest_body import state_field

__all__ = ["VIEWS", "View", "display", "page_links", "representation", "self_uri"]

View = Literal["full", "default", "ref"]
VIEWS: tuple[View, ...] = ("full", "default", "ref")


def display(category: Category, body: Mapping[str, Any]) -> str:
    """The ``display`` of a record: its name, user name or a relationship summary."""
    if category.name == "relationship":
        parts = (body.get("personA"), body.get("relationshipType"), body.get("personB"))
        return " ".join(str(p) for p in parts if p)
    for key in ("name", "names", "username", "systemId"):
        text = _name_text(body.get(key))
        if text:
            return text
    return str(body.get("uuid", ""))


def _name_text(value: Any) -> str | None:
    if isinstance(value, list):
        return next((t for t in map(_name_text, value) if t), None)
    if isinstance(value, Mapping):
        value = value.get("name") or value.get("display")
    return value if isinstance(value, str) and value else None


def _openmrs_date(moment: datetime) -> str:
    """A timestamp as OpenMRS REST writes it: ``2026-01-02T03:04:05.678+0000``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def self_uri(category: Category, uuid: str, base_url: str) -> str:
    """The absolute ``self`` link of one record."""
    return f"{base_url}{REST_BASE}/{category.rest_resource}/{uuid}"


def representation(category: Category, record: Record, view: View, base_url: str) -> dict[str, Any]:
    """The REST representation of ``record``: stored body plus uuid, display, state and links."""
    body = record.resource()
    uri = self_uri(category, record.uuid, base_url)
    links: list[dict[str, str]] = [{"rel": "self", "uri": uri}]
    shown = display(category, body)
    if view == "ref":
        return {"uuid": record.uuid, "display": shown, "links": links}
    out = dict(body)
    out["uuid"] = record.uuid
    out["display"] = shown
    out[state_field(category)] = record.state in ("retired", "voided")
    if view == "full":
        out["auditInfo"] = {"dateChanged": _openmrs_date(record.last_updated)}
    else:
        links.append({"rel": "full", "uri": f"{uri}?v=full"})
    out["links"] = links
    return out


def page_links(
    category: Category,
    base_url: str,
    *,
    start: int,
    limit: int,
    view: View,
    include_all: bool,
    fetched: int,
) -> list[dict[str, str]]:
    """The ``next``/``prev`` links of a page as OpenMRS writes them (``fetched``: rows read, one
    more than ``limit`` when there is a next page)."""
    base = f"{base_url}{REST_BASE}/{category.rest_resource}?v={view}&limit={limit}"
    if include_all:
        base += "&includeAll=true"
    links = []
    if fetched > limit:
        links.append({"rel": "next", "uri": f"{base}&startIndex={start + limit}"})
    if start > 0:
        links.append({"rel": "prev", "uri": f"{base}&startIndex={max(start - limit, 0)}"})
    return links
