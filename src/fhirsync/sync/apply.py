"""Deciding what a pulled change does locally: the shouldSynchronize rules of spec §5.9, done right.

Pure functions over values: the feed entries of one page (collapsed per record), the parent's copy
(or its absence) and the local copy. Differences from Sync 2.0 (spec §13):

- UNVOIDED and UNRETIRED propagate: the record is fetched and written back as active.
- VOIDED and RETIRED bring the parent's last body when the parent can serve it (a fhirsync
  parent does, to its children: :class:`LastBodySource`), so an edit the parent made just before
  voiding is not missed and both voided copies hold the same content hash. A parent that cannot
  (a Java node) and DELETED (purged: no body) change only the local state. A record this node
  never had is written in its voided/retired state when the parent serves its last body (the
  records that refer to it, an encounter of a voided patient, would otherwise wait for it for
  ever), and skipped when it does not (there is nothing to void).
- A CREATED/UPDATED whose record the parent no longer serves (404/410: voided or deleted since) is
  skipped, not failed: the later VOIDED/DELETED event of the same feed handles it.
- Repeated events for one record in one page collapse into one change whose final state follows
  every event in order (CREATED then VOIDED ends voided; VOIDED then UNVOIDED ends active).
- Unchanged content is written anyway and the store turns it into a no-op (no event, no audit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from fhirsync import canonical
from fhirsync import categories as cats
from fhirsync.categories import Category
from fhirsync.clients.base import FetchResult, RecordRef
from fhirsync.errors import InvalidResource, RecordError, UnknownResourceType
from fhirsync.records import Action, FeedEntry, Record, RecordState, RecordWrite
from fhirsync.service.rest import split_representation
from fhirsync.service.validation import normalize_resource

DELETE_STATES: Mapping[str, RecordState] = {
    "VOIDED": "voided",
    "RETIRED": "retired",
    "DELETED": "deleted",
}
_ACTIVATING = frozenset({"CREATED", "UNVOIDED", "UNRETIRED"})
REFERENCE_KEYS = ("subject", "patient", "encounter", "context")


@dataclass(frozen=True, slots=True)
class Change:
    """One record's collapsed change within a page."""

    category: Category
    """The category of the record written (the owner's, for sub-resource events)."""
    uuid: str
    action: Action
    """The last action seen."""
    target_state: RecordState | None
    """The state the events end in; None when they only updated content (state unchanged)."""
    entry: FeedEntry
    """The last entry seen (its links and origin are used)."""

    @property
    def needs_fetch(self) -> bool:
        """True when the parent's body is needed (the record ends active or state unknown)."""
        return self.target_state in (None, "active")

    @property
    def wants_last_body(self) -> bool:
        """True when the record ends voided or retired: the parent's last body is fetched if the
        parent can serve it (:class:`LastBodySource`)."""
        return self.target_state in ("voided", "retired")


@runtime_checkable
class LastBodySource(Protocol):
    """A client that can read the body a remote held when it voided or retired a record."""

    def fetch_last(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        """Bodies of voided/retired (or active) records; records it cannot serve are absent."""
        ...


@dataclass(frozen=True, slots=True)
class Write:
    """Apply this write."""

    write: RecordWrite


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing to do (not an error, no audit)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Fail:
    """The record failed."""

    error: RecordError


Outcome = Write | Skip | Fail


def collapse(items: Sequence[tuple[Category, str, FeedEntry]]) -> list[Change]:
    """One :class:`Change` per (category, uuid), in order of each record's last event."""
    state: dict[tuple[str, str], tuple[Category, RecordState | None, FeedEntry]] = {}
    for category, uuid, entry in items:
        key = (category.name, uuid)
        _, current, _ = state.pop(key, (category, None, entry))
        if entry.action in DELETE_STATES:
            current = DELETE_STATES[entry.action]
        elif entry.action in _ACTIVATING:
            current = "active"
        state[key] = (category, current, entry)
    return [
        Change(category, uuid, entry.action, target, entry)
        for (_, uuid), (category, target, entry) in state.items()
    ]


def origin_of(entry: FeedEntry, parent: str, below: frozenset[str] = frozenset()) -> str:
    """Where a change began: the entry's origin, else the parent itself (Java feeds).

    ``below`` are the nodes whose changes come up through this node's children. Such a change
    reached the parent through this node, which holds it already: pulled again it changes
    nothing. A pulled body that does differ is a newer version (the body fetched for an older
    entry, its later entries on a later page), made by someone the entry does not name, so it is
    the parent's: labelled as the node below's, that node would skip it as its own change.
    """
    if entry.origin is not None and entry.origin in below:
        return parent
    return entry.origin or parent


def state_change(
    change: Change, local: Record | None, origin: str, last: Mapping[str, Any] | None = None
) -> Outcome:
    """A void/retire/delete: set the state of the local copy, with ``last`` (the parent's last
    body, when it served one) as its content. An invalid ``last`` is ignored: the void still
    applies, to the local body. A record not held here arrives in its new state when ``last``
    is there, and is skipped otherwise."""
    target = change.target_state
    assert target is not None and target != "active"
    body = _valid_last(change, last)
    if body is not None:
        if local is not None and (local.content_hash, local.state) == (
            canonical.content_hash(body),
            target,
        ):
            return Skip("unchanged")
        return Write(
            RecordWrite(change.category.name, change.uuid, body, origin, target, via="parent")
        )
    if local is None:
        return Skip("not held locally")
    if local.state == target:
        return Skip("unchanged")
    return Write(RecordWrite(change.category.name, change.uuid, None, origin, target, via="parent"))


def _valid_last(change: Change, last: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if last is None:
        return None
    try:
        body, _state = checked_body(change.category, change.uuid, last)
    except InvalidResource:
        return None
    return body


def checked_body(
    category: Category, uuid: str, body: Mapping[str, Any]
) -> tuple[Mapping[str, Any], RecordState]:
    """The fetched body as this node stores it, and the state it is in; raises InvalidResource.

    A REST representation is stored the way the parent stored it (``split_representation``:
    no links/display/auditInfo, references as uuids, no voided/retired flag), so the content
    hashes agree across nodes; its flag becomes the state.
    """
    if category.is_fhir:
        fixed = normalize_resource(body, category.fhir_type)
        if str(fixed.get("id", uuid)) != uuid:
            raise InvalidResource(
                f"{category.fhir_type} id {fixed.get('id')!r} is not {uuid}", element="id"
            )
        return fixed, "active"
    if not isinstance(body, Mapping):
        raise InvalidResource("a REST representation must be a JSON object")
    stored, state = split_representation(category, body)
    return stored, state or "active"


def content_change(
    change: Change,
    body: Mapping[str, Any] | None,
    error: RecordError | None,
    origin: str,
    checked: tuple[Mapping[str, Any], RecordState] | InvalidResource | None = None,
) -> Outcome:
    """A create/update/unvoid/unretire: write the parent's body (``None`` = parent lacks it).

    ``checked`` is ``checked_body``'s result for ``body`` when it was already computed (the pull
    validates a page's bodies in worker processes); otherwise the body is checked here.
    """
    if error is not None:
        error.category = error.category or change.category.name
        error.uuid = error.uuid or change.uuid
        return Fail(error)
    if body is None:
        return Skip("absent at the parent (a later event removes it)")
    if checked is None:
        try:
            checked = checked_body(change.category, change.uuid, body)
        except InvalidResource as exc:
            checked = exc
    if isinstance(checked, InvalidResource):
        checked.category, checked.uuid = change.category.name, change.uuid
        return Fail(checked)
    fixed, state = checked
    return Write(RecordWrite(change.category.name, change.uuid, fixed, origin, state, via="parent"))


def references(body: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """The records ``body`` depends on: (candidate categories, uuid) of its subject, patient,
    encounter and context references (``Patient/{uuid}``, absolute URLs too)."""
    found: list[tuple[tuple[str, ...], str]] = []
    for key in REFERENCE_KEYS:
        value = body.get(key)
        ref = value.get("reference") if isinstance(value, Mapping) else None
        if not isinstance(ref, str) or "/" not in ref:
            continue
        resource_type, _, uuid = ref.rstrip("/").rpartition("/")
        resource_type = resource_type.rpartition("/")[2]
        try:
            names = tuple(c.name for c in cats.for_fhir_type(resource_type))
        except UnknownResourceType:
            continue
        found.append((names, uuid))
    return found
