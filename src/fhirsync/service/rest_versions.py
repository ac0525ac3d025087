"""Which version of a REST record an ``If-Match`` names (FHIR's idea, which OpenMRS REST lacks).

A write may name the record's version (``W/"3"``) or its entity tag (:func:`entity_tag`: content
hash and state, which every node holding the same version computes alike, so a child can send the
tag of the version it last agreed with its parent without knowing the parent's version numbers).
A stale one is refused with 412 (VersionMismatch) and nothing is written; a child turns that into a
conflict.
"""

from __future__ import annotations

from fhirsync.categories import Category
from fhirsync.errors import RequestError, VersionMismatch
from fhirsync.records import Record, RecordState

__all__ = ["check_if_match", "entity_tag", "parse_if_match"]


def entity_tag(content_hash: str, state: RecordState) -> str:
    """The entity tag of a version: its content hash and its state (a retire changes only the
    state, and must change the tag)."""
    return f"{content_hash}-{state}"


def parse_if_match(header: str | None) -> str | None:
    """The tag in an ``If-Match`` header, unquoted (``W/"3"`` → ``3``); None when absent."""
    if header is None or not header.strip():
        return None
    value = header.strip().removeprefix("W/").strip('"').strip()
    if not value:
        raise RequestError(f"If-Match {header!r} names no version")
    return value


def check_if_match(category: Category, uuid: str, record: Record | None, tag: str | None) -> None:
    """VersionMismatch (412) when ``tag`` does not name ``record``'s current version.

    ``*`` asks only that the record exist. Digits are a version number, anything else an
    :func:`entity_tag`. A missing (or purged) record matches no tag.
    """
    if tag is None:
        return
    live = record is not None and record.state != "deleted"
    if tag == "*" and live:
        return
    if live and record is not None:
        current = (
            str(record.version) if tag.isdigit() else entity_tag(record.content_hash, record.state)
        )
        if tag == current:
            return
    raise VersionMismatch(
        f"{category.rest_resource}/{uuid} has changed since the version If-Match names",
        current_version=record.version if record is not None else None,
    )
