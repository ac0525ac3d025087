"""Validation of incoming FHIR R4 resources (fhir.resources R4B models plus required bindings).

Validation only *checks*: the caller stores its own dict (canonical JSON of the original), never a
model's re-serialisation, because re-serialising changes the bytes (``.512+00:00`` becomes
``.512000Z``) and with them the content hash.

What runs, in order:

1. :func:`~fhirsync.service.fastcheck.fast_accepts`, a conservative check compiled from the model
   metadata that answers "certainly valid" (about 20 µs for a generated Patient) or "not sure";
2. only when it is not sure, the fhir.resources R4B model itself (with a memo of validated nested
   elements, below): the judge of what is valid, the wording of every structural error, and the
   lenient list repair;
3. the required-binding codes (below), with a one-pass check for the common all-valid case and
   the ordered walk that words the first error otherwise.

The fast path never accepts what the model rejects (``tests/unit/service/test_fastcheck.py``), so
accept/reject decisions and error messages are those of the model either way.

Two things fhir.resources does not do are done here:

- the codes of required bindings (``gender: "femme"`` passes the models), checked from a small
  table of paths per resource type after the models accept the structure;
- HAPI's lenient parsing, which OpenMRS relies on: a single object where the model wants a list
  (OpenMRS's own sample Patient sends ``"identifier": {...}``). :func:`normalize_resource` wraps
  such values in a list, and :func:`validate_resource` accepts what it can normalise.

Errors are :class:`~fhirsync.errors.InvalidResource` whose ``element`` is a FHIRPath-like location
(``Patient.contact[0].name.family``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from types import UnionType
from typing import Any, Union, get_args, get_origin

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from fhirsync.errors import InvalidResource, UnknownResourceType
from fhirsync.service.fastcheck import fast_accepts

__all__ = ["normalize_resource", "validate_resource"]

# A resource nested deeper than this many wrong-shape lists is not worth repairing.
_MAX_REPAIRS = 16

# --- required bindings (FHIR R4 value sets with binding strength "required") ---------------------

_GENDER = frozenset({"male", "female", "other", "unknown"})
_ADDRESS = {
    "use": frozenset({"home", "work", "temp", "old", "billing"}),
    "type": frozenset({"postal", "physical", "both"}),
}
_TELECOM = {
    "system": frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"}),
    "use": frozenset({"home", "work", "temp", "old", "mobile"}),
}
_NAME = {"use": frozenset({"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"})}
_IDENTIFIER = {"use": frozenset({"usual", "official", "temp", "secondary", "old"})}
_PRIORITY = frozenset({"routine", "urgent", "asap", "stat"})
_ORDER_INTENT = frozenset(
    {
        "proposal",
        "plan",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    }
)
_ENCOUNTER_STATUS = frozenset(
    {
        "planned",
        "arrived",
        "triaged",
        "in-progress",
        "onleave",
        "finished",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
_EPISODE_STATUS = frozenset(
    {"planned", "waitlist", "active", "onhold", "finished", "cancelled", "entered-in-error"}
)
_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
_ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

_Path = tuple[str, ...]
# A code rule: the path of a ``code`` element, or of a CodeableConcept whose codings from
# ``system`` must come from the value set (codings of other systems are translations; allowed).
_CodeRule = tuple[_Path, frozenset[str]]
_ConceptRule = tuple[_Path, str, frozenset[str]]


def _datatype(prefix: _Path, rules: Mapping[str, frozenset[str]]) -> list[_CodeRule]:
    return [((*prefix, name), codes) for name, codes in rules.items()]


def _person_like(*, contact: bool = False) -> list[_CodeRule]:
    out = [
        (("gender",), _GENDER),
        *_datatype(("name",), _NAME),
        *_datatype(("telecom",), _TELECOM),
        *_datatype(("address",), _ADDRESS),
    ]
    if contact:
        out += [
            (("contact", "gender"), _GENDER),
            *_datatype(("contact", "name"), _NAME),
            *_datatype(("contact", "telecom"), _TELECOM),
            *_datatype(("contact", "address"), _ADDRESS),
        ]
    return out


_CODE_RULES: Mapping[str, list[_CodeRule]] = {
    "Patient": _person_like(contact=True),
    "Person": _person_like(),
    "Practitioner": _person_like(),
    "RelatedPerson": _person_like(),
    "Location": [
        (("status",), frozenset({"active", "suspended", "inactive"})),
        (("mode",), frozenset({"instance", "kind"})),
        *_datatype(("telecom",), _TELECOM),
        *_datatype(("address",), _ADDRESS),
    ],
    "Encounter": [
        (("status",), _ENCOUNTER_STATUS),
        (("statusHistory", "status"), _ENCOUNTER_STATUS),
        (("location", "status"), frozenset({"planned", "active", "reserved", "completed"})),
    ],
    "Observation": [
        (
            ("status",),
            frozenset(
                {
                    "registered",
                    "preliminary",
                    "final",
                    "amended",
                    "corrected",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                }
            ),
        )
    ],
    "AllergyIntolerance": [
        (("type",), frozenset({"allergy", "intolerance"})),
        (("category",), frozenset({"food", "medication", "environment", "biologic"})),
        (("criticality",), frozenset({"low", "high", "unable-to-assess"})),
        (("reaction", "severity"), frozenset({"mild", "moderate", "severe"})),
    ],
    "MedicationRequest": [
        (
            ("status",),
            frozenset(
                {
                    "active",
                    "on-hold",
                    "cancelled",
                    "completed",
                    "entered-in-error",
                    "stopped",
                    "draft",
                    "unknown",
                }
            ),
        ),
        (("intent",), _ORDER_INTENT),
        (("priority",), _PRIORITY),
    ],
    "ServiceRequest": [
        (
            ("status",),
            frozenset(
                {
                    "draft",
                    "active",
                    "on-hold",
                    "revoked",
                    "completed",
                    "entered-in-error",
                    "unknown",
                }
            ),
        ),
        (("intent",), _ORDER_INTENT | {"directive"}),
        (("priority",), _PRIORITY),
    ],
    "Immunization": [(("status",), frozenset({"completed", "entered-in-error", "not-done"}))],
    "Task": [
        (
            ("status",),
            frozenset(
                {
                    "draft",
                    "requested",
                    "received",
                    "accepted",
                    "rejected",
                    "ready",
                    "cancelled",
                    "in-progress",
                    "on-hold",
                    "failed",
                    "completed",
                    "entered-in-error",
                }
            ),
        ),
        (("intent",), _ORDER_INTENT | {"unknown"}),
        (("priority",), _PRIORITY),
    ],
    "DiagnosticReport": [
        (
            ("status",),
            frozenset(
                {
                    "registered",
                    "partial",
                    "preliminary",
                    "final",
                    "amended",
                    "corrected",
                    "appended",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                }
            ),
        )
    ],
    "EpisodeOfCare": [
        (("status",), _EPISODE_STATUS),
        (("statusHistory", "status"), _EPISODE_STATUS),
    ],
    "Group": [
        (
            ("type",),
            frozenset({"person", "animal", "practitioner", "device", "medication", "substance"}),
        )
    ],
    "Medication": [(("status",), frozenset({"active", "inactive", "entered-in-error"}))],
    "MedicationDispense": [
        (
            ("status",),
            frozenset(
                {
                    "preparation",
                    "in-progress",
                    "cancelled",
                    "on-hold",
                    "completed",
                    "entered-in-error",
                    "stopped",
                    "declined",
                    "unknown",
                }
            ),
        )
    ],
}

_CONCEPT_RULES: Mapping[str, list[_ConceptRule]] = {
    "Condition": [
        (
            ("clinicalStatus",),
            _CONDITION_CLINICAL,
            frozenset({"active", "recurrence", "relapse", "inactive", "remission", "resolved"}),
        ),
        (
            ("verificationStatus",),
            _CONDITION_VERIFICATION,
            frozenset(
                {
                    "unconfirmed",
                    "provisional",
                    "differential",
                    "confirmed",
                    "refuted",
                    "entered-in-error",
                }
            ),
        ),
    ],
    "AllergyIntolerance": [
        (("clinicalStatus",), _ALLERGY_CLINICAL, frozenset({"active", "inactive", "resolved"})),
        (
            ("verificationStatus",),
            _ALLERGY_VERIFICATION,
            frozenset({"unconfirmed", "confirmed", "refuted", "entered-in-error"}),
        ),
    ],
}


# --- public API -----------------------------------------------------------------------------------


def validate_resource(resource: Mapping[str, Any], expected_type: str | None = None) -> None:
    """Check one FHIR R4 resource; raise InvalidResource naming the offending element.

    Raises UnknownResourceType when ``resourceType`` names no FHIR resource, and InvalidResource
    when it differs from ``expected_type``, when the structure fails the fhir.resources R4B model,
    or when a code of a required binding is not in its value set. A single object where FHIR wants
    a list is accepted (HAPI's lenient parsing); use :func:`normalize_resource` to store the list.
    """
    normalize_resource(resource, expected_type)


def normalize_resource(
    resource: Mapping[str, Any], expected_type: str | None = None
) -> Mapping[str, Any]:
    """Validate like :func:`validate_resource` and return the resource to store.

    That is ``resource`` itself (the same object) unless a single object stood where FHIR wants a
    list; then it is a copy with those objects wrapped in lists and nothing else changed.
    """
    if not isinstance(resource, Mapping):
        raise InvalidResource("A FHIR resource must be a JSON object")
    model = _model_for(resource, expected_type)
    fixed = _validate_structure(model, resource)
    _check_codes(fixed)
    return fixed


# --- internals ------------------------------------------------------------------------------------


def _model_for(resource: Mapping[str, Any], expected_type: str | None) -> type[Resource]:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidResource("resourceType is missing or not a string", element="resourceType")
    if expected_type is not None and resource_type != expected_type:
        raise InvalidResource(
            f"resourceType is {resource_type!r}, expected {expected_type!r}",
            element="resourceType",
        )
    model = _model_class(resource_type)
    if model is None:
        raise UnknownResourceType(f"Resource type {resource_type!r} is not a FHIR R4 resource")
    return model


@lru_cache(maxsize=256)
def _model_class(resource_type: str) -> type[Resource] | None:
    if not resource_type.isalpha() or not resource_type[0].isupper():
        return None
    try:
        model = get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError, ImportError):
        return None
    # Data types (HumanName, ...) have model classes too, but are not resources.
    if not isinstance(model, type) or not issubclass(model, Resource):
        return None
    return model


def _validate_structure(model: type[Resource], resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """Validate with the model, wrapping lone objects in lists (lenient parsing) and retrying."""
    if fast_accepts(model, resource):
        return resource
    current = resource
    for _ in range(_MAX_REPAIRS):
        try:
            _build(model, current)
        except _Failure as failure:
            first, loc = failure.error, failure.loc
            if first.get("type") == "list_type" and isinstance(first.get("input"), Mapping):
                repaired = _wrap_in_list(current, loc)
                if repaired is not None:
                    current = repaired
                    continue
            raise InvalidResource(
                _message(first, failure.count), element=_element(resource["resourceType"], loc)
            ) from failure.__cause__
        return current
    raise InvalidResource(
        "Too many single values where lists are expected", element=resource["resourceType"]
    )


# --- memoised model validation --------------------------------------------------------------------
#
# fhir.resources validates every nested element through Python-level validators, which is most of
# its cost. Records repeat many small elements (codings, identifier types, references to the same
# location, extensions). A nested element's validity depends only on its own content, so a small
# cache maps (model class, canonical JSON of the element) to the validated instance, and the parent
# is validated with that instance in place of the dict (pydantic does not revalidate instances).
# The same inputs are accepted and rejected as by a plain ``model_validate``; errors carry the full
# location. Measured on generated Patients: about 2x the plain rate.

_CACHE_MAX = 8192
_CACHE_MAX_KEY = 512
_memo: dict[tuple[type[Any], bytes], Any] = {}


class _Failure(Exception):
    """Internal: the first validation error of a subtree and its location from the resource."""

    def __init__(self, error: Mapping[str, Any], loc: tuple[Any, ...], count: int) -> None:
        super().__init__(str(error.get("msg")))
        self.error = error
        self.loc = loc
        self.count = count


_CHILDREN: dict[type[Any], Mapping[str, tuple[type[Any], bool]]] = {}


def _children(model: type[Any]) -> Mapping[str, tuple[type[Any], bool]]:
    """Complex child elements of ``model``: JSON name -> (model class, is a list)."""
    known = _CHILDREN.get(model)
    if known is not None:
        return known
    out: dict[str, tuple[type[Any], bool]] = {}
    for name, info in model.model_fields.items():
        target: type[Any] | None = None
        is_list = False
        ann = info.annotation
        options = get_args(ann) if get_origin(ann) in (Union, UnionType) else (ann,)
        for option in options:
            arg = option
            if get_origin(arg) is list:
                is_list = True
                arg = get_args(arg)[0]
            klass = getattr(arg, "get_model_klass", None)
            if klass is not None:
                target = klass()
        # Contained resources are polymorphic (chosen by resourceType): left to the model.
        if target is not None and not issubclass(target, Resource):
            out[info.alias or name] = (target, is_list)
    _CHILDREN[model] = out
    return out


def _build(model: type[Any], data: Mapping[str, Any]) -> Any:
    """``model.model_validate(data)`` with nested elements taken from, or added to, the cache."""
    kids = _children(model)
    replaced: dict[str, Any] | None = None
    for key, value in data.items():
        spec = kids.get(key)
        if spec is None:
            continue
        child, is_list = spec
        if is_list and isinstance(value, list):
            items = [
                _cached(child, item, (key, index)) if isinstance(item, dict) else item
                for index, item in enumerate(value)
            ]
            replaced = replaced if replaced is not None else dict(data)
            replaced[key] = items
        elif not is_list and isinstance(value, dict):
            replaced = replaced if replaced is not None else dict(data)
            replaced[key] = _cached(child, value, (key,))
    try:
        return model.model_validate(replaced if replaced is not None else data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        failure = _Failure(errors[0], tuple(errors[0].get("loc", ())), len(errors))
        raise failure from exc
    except (TypeError, ValueError) as exc:
        # Model validators of fhir.resources occasionally raise plain errors on odd input.
        failure = _Failure({"type": "value_error", "msg": str(exc)}, (), 1)
        raise failure from exc


def _cached(model: type[Any], data: dict[str, Any], where: tuple[Any, ...]) -> Any:
    try:
        key = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON (odd numbers): validate without the cache
        key = b""
    # orjson writes NaN as null, so keys holding null are not trusted to be unique.
    cacheable = 0 < len(key) <= _CACHE_MAX_KEY and b"null" not in key
    if cacheable:
        hit = _memo.get((model, key))
        if hit is not None:
            return hit
    try:
        instance = _build(model, data)
    except _Failure as failure:
        raise _Failure(failure.error, where + failure.loc, failure.count) from failure.__cause__
    if cacheable:
        if len(_memo) >= _CACHE_MAX:
            _memo.clear()  # cheap bound; the common elements come back within a few records
        _memo[(model, key)] = instance
    return instance


def _wrap_in_list(resource: Mapping[str, Any], loc: Sequence[Any]) -> Mapping[str, Any] | None:
    """A copy of ``resource`` with the object at ``loc`` wrapped in a list (None if not found)."""
    if not loc:
        return None
    root: dict[str, Any] = dict(resource)
    parent: Any = root
    for step in loc[:-1]:
        try:
            child = parent[step]
        except (KeyError, IndexError, TypeError):
            return None
        child = dict(child) if isinstance(child, Mapping) else list(child)
        parent[step] = child
        parent = child
    last = loc[-1]
    try:
        value = parent[last]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(value, Mapping):
        return None
    parent[last] = [value]
    return root


def _message(error: Mapping[str, Any], count: int) -> str:
    msg = str(error.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        msg = "Unknown element"
    if count > 1:
        msg += f" (and {count - 1} more error{'s' if count > 2 else ''})"
    return msg


def _element(resource_type: str, loc: Sequence[Any]) -> str:
    """A FHIRPath-like element name from a pydantic location: ``Patient.name[0].given[1]``."""
    out = resource_type
    for step in loc:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}"
    return out


def _check_codes(resource: Mapping[str, Any]) -> None:
    """Raise InvalidResource for the first code outside its required value set."""
    if not _codes_ok(resource, _code_tree(resource["resourceType"])):
        _check_codes_in_order(resource)


class _CodeNode:
    """One step of the code rules of a resource type, merged into a tree by path prefix."""

    __slots__ = ("children", "codes", "concept")

    def __init__(self) -> None:
        self.codes: frozenset[str] | None = None
        self.children: dict[str, _CodeNode] = {}
        self.concept: tuple[str, frozenset[str]] | None = None


@lru_cache(maxsize=256)
def _code_tree(resource_type: str) -> Mapping[str, _CodeNode]:
    root: dict[str, _CodeNode] = {}

    def node_at(path: _Path) -> _CodeNode:
        level = root
        node = _CodeNode()
        for step in path:
            node = level.setdefault(step, _CodeNode())
            level = node.children
        return node

    rules = [*_CODE_RULES.get(resource_type, ()), *_datatype(("identifier",), _IDENTIFIER)]
    for path, codes in rules:
        leaf = node_at(path)
        leaf.codes = codes if leaf.codes is None else leaf.codes & codes
    for path, system, codes in _CONCEPT_RULES.get(resource_type, ()):
        node_at((*path, "coding")).concept = (system, codes)
    return root


def _codes_ok(node: Mapping[str, Any], tree: Mapping[str, _CodeNode]) -> bool:
    """True if every code the rules reach is valid; False means "let the ordered walk decide".

    The common case (all codes fine) in one pass over a merged tree; anything odd (a code that
    is not a ``str``, a list in a list, a mapping that is not a dict) answers False, and
    :func:`_check_codes_in_order` then finds and words the first error exactly as before.
    """
    for key, rule in tree.items():
        child = node.get(key)
        if child is None:
            continue
        codes = rule.codes
        for item in child if type(child) is list else (child,):
            kind = type(item)
            if kind is str:
                if codes is not None and item not in codes:
                    return False
                continue
            if codes is not None or kind is list:
                return False
            if kind is not dict:
                if isinstance(item, Mapping):
                    return False
                continue
            if rule.children and not _codes_ok(item, rule.children):
                return False
            if rule.concept is not None and item.get("system") == rule.concept[0]:
                code = item.get("code")
                if type(code) is not str or code not in rule.concept[1]:
                    return False
    return True


def _check_codes_in_order(resource: Mapping[str, Any]) -> None:
    resource_type: str = resource["resourceType"]
    for path, codes in _CODE_RULES.get(resource_type, ()):
        for where, value in _walk(resource, path, resource_type):
            if value not in codes:
                raise InvalidResource(
                    f"{value!r} is not a valid code for {where} "
                    f"(expected one of: {', '.join(sorted(codes))})",
                    element=where,
                )
    for path, codes in _datatype_rules(resource):
        for where, value in _walk(resource, path, resource_type):
            if value not in codes:
                raise InvalidResource(
                    f"{value!r} is not a valid code for {where} "
                    f"(expected one of: {', '.join(sorted(codes))})",
                    element=where,
                )
    for path, system, codes in _CONCEPT_RULES.get(resource_type, ()):
        for where, coding in _walk(resource, (*path, "coding"), resource_type):
            if not isinstance(coding, Mapping) or coding.get("system") != system:
                continue
            if coding.get("code") not in codes:
                raise InvalidResource(
                    f"{coding.get('code')!r} is not a valid code of {system} "
                    f"(expected one of: {', '.join(sorted(codes))})",
                    element=f"{where}.code",
                )


def _datatype_rules(resource: Mapping[str, Any]) -> list[_CodeRule]:
    # Every resource with an ``identifier`` has Identifier there; the person-like types and
    # Location list their HumanName/ContactPoint/Address paths in _CODE_RULES already.
    if "identifier" in resource:
        return _datatype(("identifier",), _IDENTIFIER)
    return []


def _walk(node: Any, path: _Path, where: str) -> Iterator[tuple[str, Any]]:
    """Every value at ``path`` under ``node``, stepping through lists, with its element name."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, path, f"{where}[{index}]")
        return
    if not path:
        yield where, node
        return
    if isinstance(node, Mapping):
        child = node.get(path[0])
        if child is not None:
            yield from _walk(child, path[1:], f"{where}.{path[0]}")
