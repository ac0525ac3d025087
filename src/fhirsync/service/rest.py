"""OpenMRS REST v1 representations of the metadata categories with no FHIR form.

A record of these categories is stored as its OpenMRS REST representation *without* server
bookkeeping: ``links``, ``display``, ``auditInfo`` and ``resourceVersion`` are added on the way out
only, and ``retired``/``voided`` is the record's state, not a body field. So two nodes holding the
same object hold the same bytes however the object reached them (a Java node's ``?v=full`` answer or
a hand-written POST), and retiring a record changes its state but not its content hash.

References to other objects (``personA``, ``concept``, ``roles``, ...) are stored as uuid strings,
which is also what OpenMRS accepts on create. The payload adjustments of spec §5.8 are applied on
the way in (a form's ``formFields`` and ``resources`` are dropped).

Writes take an optional ``If-Match`` (the same idea as FHIR's, which OpenMRS REST lacks): the
record's version (``W/"3"``) or its entity tag (:func:`entity_tag`: content hash and state, which
every node holding the same version computes alike, so a child can send the tag of the version it
last agreed with its parent without knowing the parent's version numbers). A stale one is refused
with 412 (VersionMismatch) and nothing is written; a child turns that into a conflict.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from fhirsync import categories as cats
from fhirsync.categories import REST_BASE, Category
from fhirsync.errors import (
    ConflictError,
    Forbidden,
    InvalidResource,
    RecordNotFound,
    RequestError,
    VersionMismatch,
)
from fhirsync.records import Record, RecordState, RecordWrite
from fhirsync.store import records
from fhirsync.store.engine import Database
from fhirsync.store.tables import records as records_table
from fhirsync.store.users import User

View = Literal["full", "default", "ref"]
VIEWS: tuple[View, ...] = ("full", "default", "ref")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
ORIGIN_HEADER = "X-Fhirsync-Origin"

# Added on the way out only; never stored (canonical.unify ignores them in hashes too).
_BOOKKEEPING = frozenset({"links", "display", "auditInfo", "resourceVersion"})
USER_SECRETS = frozenset({"password", "secretQuestion", "secretAnswer"})


@dataclass(frozen=True, slots=True)
class Author:
    """Who a write is recorded as coming from: the origin node and how it arrived."""

    origin: str
    via: str | None = None


@dataclass(frozen=True, slots=True)
class _Rules:
    """What one REST resource requires of a body."""

    required: tuple[tuple[str, ...], ...] = ()
    """Each inner tuple: at least one of these fields must be present."""
    strings: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    """Fields naming another object: a uuid string, or an object with one (stored as the uuid)."""
    reference_lists: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    """Fields removed before storing (spec §5.8)."""
    refused: frozenset[str] = field(default_factory=frozenset)
    """Fields that must never be accepted (user secrets)."""


_RULES: Mapping[str, _Rules] = {
    "concept": _Rules(
        required=(("name", "names"),),
        strings=("version",),
        references=("datatype", "conceptClass"),
        reference_lists=("setMembers", "answers"),
    ),
    "visittype": _Rules(required=(("name",),), strings=("name", "description")),
    "privilege": _Rules(required=(("name",),), strings=("name", "description")),
    "program": _Rules(
        required=(("name",),),
        strings=("name", "description"),
        references=("concept", "outcomesConcept"),
    ),
    "drug": _Rules(
        required=(("name",),),
        strings=("name", "description", "strength"),
        references=("concept", "dosageForm", "route"),
    ),
    "form": _Rules(
        required=(("name",), ("version",)),
        strings=("name", "version", "description"),
        references=("encounterType",),
        dropped=("formFields", "resources"),
    ),
    "relationship": _Rules(
        required=(("personA",), ("personB",), ("relationshipType",)),
        strings=("startDate", "endDate"),
        references=("personA", "personB", "relationshipType"),
    ),
    "user": _Rules(
        required=(("username", "systemId"),),
        strings=("username", "systemId"),
        references=("person",),
        reference_lists=("roles",),
        refused=USER_SECRETS,
    ),
}


# --- resolving the request -------------------------------------------------------------------


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


# --- the stored form -------------------------------------------------------------------------


def state_field(category: Category) -> str:
    """``retired`` or ``voided``: the representation field that carries the record state."""
    return "retired" if category.delete_state == "retired" else "voided"


def split_representation(
    category: Category, representation: Mapping[str, Any]
) -> tuple[dict[str, Any], RecordState | None]:
    """A representation as stored, and the state it asks for (None if it names none).

    Removes server bookkeeping, the state field, null fields and the spec §5.8 fields; turns
    references into uuid strings. InvalidResource (naming the field) on a malformed field or a user
    secret. Does not check required fields (an update may name only some).
    """
    rules = _RULES.get(category.name, _Rules())
    refused = sorted(rules.refused & representation.keys())
    if refused:
        # Name the fields, never their values: secrets must not reach a log or a response.
        raise InvalidResource(
            f"user secrets are not accepted ({', '.join(refused)}); set passwords on each node",
            category=category.name,
            element=refused[0],
        )
    key = state_field(category)
    state: RecordState | None = None
    if key in representation and representation[key] is not None:
        flag = representation[key]
        if not isinstance(flag, bool):
            raise InvalidResource(f"{key} must be true or false", element=key)
        state = category.delete_state if flag else "active"
    skip = _BOOKKEEPING | {key} | set(rules.dropped)
    body = {k: v for k, v in representation.items() if k not in skip and v is not None}
    for name in rules.references:
        if name in body:
            body[name] = _reference(body[name], name)
    for name in rules.reference_lists:
        if name in body:
            items = body[name]
            if not isinstance(items, list):
                raise InvalidResource(f"{name} must be a list", element=name)
            body[name] = [_reference(item, f"{name}[{i}]") for i, item in enumerate(items)]
    return body, state


def _reference(value: Any, name: str) -> str:
    if isinstance(value, Mapping):
        value = value.get("uuid")
    if not isinstance(value, str) or not value.strip():
        raise InvalidResource(
            f"{name} must be a uuid string or an object with a uuid", element=name
        )
    return value


def validate(category: Category, body: Mapping[str, Any]) -> None:
    """Check the required and string fields of a complete stored body; InvalidResource if wrong."""
    rules = _RULES.get(category.name, _Rules())
    for alternatives in rules.required:
        if not any(name in body for name in alternatives):
            raise InvalidResource(
                f"{' or '.join(alternatives)} is required for {category.rest_resource}",
                category=category.name,
                element=alternatives[0],
            )
    for name in rules.strings:
        if name in body and not isinstance(body[name], str):
            raise InvalidResource(f"{name} must be a string", element=name)
    for name in ("name", "username", "systemId", "version"):
        if name in rules.strings and name in body and not body[name].strip():
            raise InvalidResource(f"{name} must not be empty", element=name)
    if category.name == "concept":
        _validate_concept_names(body)


def _validate_concept_names(body: Mapping[str, Any]) -> None:
    name = body.get("name")
    if name is not None and not _is_concept_name(name):
        raise InvalidResource("name must be a string or an object with a name", element="name")
    if "names" in body:
        names = body["names"]
        if not isinstance(names, list) or not names:
            raise InvalidResource("names must be a non-empty list", element="names")
        for i, item in enumerate(names):
            if not _is_concept_name(item):
                raise InvalidResource(
                    f"names[{i}] must be a string or an object with a name", element=f"names[{i}]"
                )


def _is_concept_name(value: Any) -> bool:
    if isinstance(value, Mapping):
        value = value.get("name")
    return isinstance(value, str) and bool(value.strip())


# --- versions --------------------------------------------------------------------------------


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


# --- the representation served ---------------------------------------------------------------


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


# --- operations ------------------------------------------------------------------------------


def _current(conn: Connection, category: Category, uuid: str) -> Record | None:
    """The record in a write transaction, its row locked until commit.

    On PostgreSQL (read committed) two concurrent merges would otherwise both start from the same
    version and the later would drop the earlier's fields. SQLite write transactions are already
    serialised by BEGIN IMMEDIATE, and SQLAlchemy renders no FOR UPDATE there.
    """
    conn.execute(
        select(records_table.c.id)
        .where(records_table.c.category == category.name, records_table.c.uuid == uuid)
        .with_for_update()
    )
    return records.get(conn, category.name, uuid)


def _live(conn: Connection, category: Category, uuid: str, *, lock: bool = False) -> Record:
    """The record unless it is missing or purged; RecordNotFound otherwise."""
    rec = _current(conn, category, uuid) if lock else records.get(conn, category.name, uuid)
    if rec is None or rec.state == "deleted":
        raise RecordNotFound(
            f"{category.rest_resource}/{uuid} does not exist", category=category.name, uuid=uuid
        )
    return rec


def read(db: Database, category: Category, uuid: str, view: View, base_url: str) -> dict[str, Any]:
    """One record's representation; retired/voided ones too; RecordNotFound if missing or purged."""
    with db.read() as conn:
        rec = _live(conn, category, uuid)
    return representation(category, rec, view, base_url)


def list_page(
    db: Database,
    category: Category,
    *,
    view: View,
    base_url: str,
    start_index: int = 0,
    limit: int = DEFAULT_LIMIT,
    include_all: bool = False,
) -> dict[str, Any]:
    """``{"results": [...]}`` of active records (retired ones too with ``include_all``), in
    insertion order, with ``next``/``prev`` links as OpenMRS pages them."""
    if start_index < 0:
        raise InvalidResource("startIndex must not be negative", element="startIndex")
    if limit < 1:
        raise InvalidResource("limit must be at least 1", element="limit")
    limit = min(limit, MAX_LIMIT)
    states = ("active", "retired", "voided") if include_all else ("active",)
    query = (
        select(records_table.c.uuid)
        .where(records_table.c.category == category.name, records_table.c.state.in_(states))
        .order_by(records_table.c.id)
        .offset(start_index)
        .limit(limit + 1)
    )
    with db.read() as conn:
        uuids = [str(u) for u in conn.execute(query).scalars()]
        found = records.get_many(conn, [category.name], uuids[:limit])
    page = [found[u] for u in uuids[:limit] if u in found]
    out: dict[str, Any] = {
        "results": [representation(category, rec, view, base_url) for rec in page]
    }
    links = _page_links(
        category,
        base_url,
        start=start_index,
        limit=limit,
        view=view,
        include_all=include_all,
        fetched=len(uuids),
    )
    if links:
        out["links"] = links
    return out


def _page_links(
    category: Category,
    base_url: str,
    *,
    start: int,
    limit: int,
    view: View,
    include_all: bool,
    fetched: int,
) -> list[dict[str, str]]:
    base = f"{base_url}{REST_BASE}/{category.rest_resource}?v={view}&limit={limit}"
    if include_all:
        base += "&includeAll=true"
    links = []
    if fetched > limit:
        links.append({"rel": "next", "uri": f"{base}&startIndex={start + limit}"})
    if start > 0:
        links.append({"rel": "prev", "uri": f"{base}&startIndex={max(start - limit, 0)}"})
    return links


@dataclass(frozen=True, slots=True)
class _Change:
    """A request body as a change: fields to set, fields to remove (null), the state asked for."""

    body: dict[str, Any]
    removed: frozenset[str]
    state: RecordState | None

    @classmethod
    def of(cls, category: Category, payload: Mapping[str, Any]) -> _Change:
        body, state = split_representation(category, payload)
        return cls(body, frozenset(k for k, v in payload.items() if v is None), state)


def create(
    db: Database,
    category: Category,
    payload: Mapping[str, Any],
    author: Author,
    base_url: str,
    *,
    if_match: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Create a record from ``payload``, keeping its ``uuid`` (uuids are shared across nodes).

    A uuid that already exists (and is not purged) updates that record instead, so a sync that
    sends the same create twice is harmless; ``if_match`` (:func:`check_if_match`) guards that
    update. Returns the full representation and whether a record was created.
    """
    given = payload.get("uuid")
    if given is None:
        uuid = str(uuidlib.uuid4())
    elif isinstance(given, str) and cats.is_valid_id(given):
        uuid = given
    else:
        raise InvalidResource(
            "uuid must be a string of letters, digits, '-' or '.'", element="uuid"
        )
    change = _Change.of(category, payload)
    try:
        rec, created = _create_once(db, category, uuid, change, author, if_match)
    except IntegrityError:
        # Another request inserted this uuid (or the category's first feed counter) after we
        # looked: on PostgreSQL that is a unique violation. Once more sees that row and merges.
        try:
            rec, created = _create_once(db, category, uuid, change, author, if_match)
        except IntegrityError as exc:
            message = f"{category.rest_resource}/{uuid} is being written concurrently"
            raise ConflictError(message) from exc
    return representation(category, rec, "full", base_url), created


def _create_once(
    db: Database,
    category: Category,
    uuid: str,
    change: _Change,
    author: Author,
    if_match: str | None,
) -> tuple[Record, bool]:
    with db.write() as conn:
        old = _current(conn, category, uuid)
        check_if_match(category, uuid, old, if_match)
        if old is not None and old.state != "deleted":
            return _merge_and_write(conn, category, old, change, author), False
        validate(category, change.body)
        write = RecordWrite(
            category.name,
            uuid,
            change.body,
            author.origin,
            change.state or "active",
            via=author.via,
        )
        return records.write(conn, write).record, True


def update(
    db: Database,
    category: Category,
    uuid: str,
    payload: Mapping[str, Any],
    *,
    author: Author,
    base_url: str,
    if_match: str | None = None,
) -> dict[str, Any]:
    """Merge ``payload``'s fields into the stored record (OpenMRS semantics).

    ``retired``/``voided`` false restores a retired/voided record, true retires/voids it; a null
    field removes it. RecordNotFound if the record is missing or purged (never a silent success);
    VersionMismatch when ``if_match`` is stale.
    """
    given = payload.get("uuid")
    if given is not None and given != uuid:
        raise InvalidResource("uuid in the body does not match the path", element="uuid")
    change = _Change.of(category, payload)
    with db.write() as conn:
        old = _live(conn, category, uuid, lock=True)
        check_if_match(category, uuid, old, if_match)
        rec = _merge_and_write(conn, category, old, change, author)
    return representation(category, rec, "full", base_url)


def _merge_and_write(
    conn: Connection, category: Category, old: Record, change: _Change, author: Author
) -> Record:
    merged = {k: v for k, v in old.resource().items() if k not in change.removed}
    merged.update(change.body)
    validate(category, merged)
    write = RecordWrite(
        category.name,
        old.uuid,
        merged,
        author.origin,
        change.state or old.state,
        expected_version=old.version,
        via=author.via,
    )
    return records.write(conn, write).record


def delete(
    db: Database,
    category: Category,
    uuid: str,
    author: Author,
    *,
    purge: bool,
    if_match: str | None = None,
) -> None:
    """Retire or void a record (keeping its body), or purge it (a later read is a 404).

    The store appends RETIRED/VOIDED or DELETED; retiring a retired record appends nothing.
    RecordNotFound if the record is missing or already purged; VersionMismatch when ``if_match``
    is stale (a void against an edit made since that version is refused, not applied). A
    ``reason`` is not stored: it would change the content hash, and a peer retiring the same
    record (spec §5.4 sends no reason) must end with the same bytes.
    """
    with db.write() as conn:
        old = _live(conn, category, uuid, lock=True)
        check_if_match(category, uuid, old, if_match)
        state: RecordState = "deleted" if purge else category.delete_state
        records.write(
            conn, RecordWrite(category.name, uuid, None, author.origin, state, via=author.via)
        )
