"""The stored form of a REST record: what a body may hold, and how a representation is stored.

A record of these categories is stored as its OpenMRS REST representation *without* server
bookkeeping: ``links``, ``display``, ``auditInfo`` and ``resourceVersion`` are added on the way out
only (:mod:`fhirsync.service.rest_render`), and ``retired``/``voided`` is the record's state, not a
body field. So two nodes holding the same object hold the same bytes however the object reached
them (a Java node's ``?v=full`` answer or a hand-written POST), and retiring a record changes its
state but not its content hash.

References to other objects (``personA``, ``concept``, ``roles``, ...) are stored as uuid strings,
which is also what OpenMRS accepts on create. The payload adjustments of spec §5.8 are applied on
the way in (a form's ``formFields`` and ``resources`` are dropped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhirsync.categories import Category
from fhirsync.errors import InvalidResource
from fhirsync.records import RecordState

__all__ = ["USER_SECRETS", "split_representation", "state_field", "validate"]

# Added on the way out only; never stored (canonical.unify ignores them in hashes too).
_BOOKKEEPING = frozenset({"links", "display", "auditInfo", "resourceVersion"})
USER_SECRETS = frozenset({"password", "secretQuestion", "secretAnswer"})


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
