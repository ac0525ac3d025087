"""The structure of a FHIR R4 resource checked against its fhir.resources R4B model.

The fast path (:func:`~fhirsync.service.fastcheck.fast_accepts`) answers first; only when it is not
sure does the model itself run (:mod:`fhirsync.service.model_memo`), and its first error becomes an
InvalidResource with a FHIRPath-like element. HAPI's lenient parsing, which OpenMRS relies on, is
done here too: a single object where the model wants a list (OpenMRS's own sample Patient sends
``"identifier": {...}``) is wrapped in a list and the model runs again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource

from fhirsync.errors import InvalidResource, UnknownResourceType
from fhirsync.service.fastcheck import fast_accepts
from fhirsync.service.model_memo import ModelFailure, build

__all__ = ["model_for", "validate_structure"]

# A resource nested deeper than this many wrong-shape lists is not worth repairing.
_MAX_REPAIRS = 16


def model_for(resource: Mapping[str, Any], expected_type: str | None) -> type[Resource]:
    """The model class of ``resource``'s type.

    InvalidResource when ``resourceType`` is missing or differs from ``expected_type``;
    UnknownResourceType when it names no FHIR R4 resource.
    """
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


def validate_structure(model: type[Resource], resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """Validate with the model, wrapping lone objects in lists (lenient parsing) and retrying."""
    if fast_accepts(model, resource):
        return resource
    _check_contained(resource, resource["resourceType"])
    current = resource
    for _ in range(_MAX_REPAIRS):
        try:
            build(model, current)
        except ModelFailure as failure:
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


def _check_contained(resource: Mapping[str, Any], where: str) -> None:
    """InvalidResource unless every contained resource names a FHIR R4 resource type.

    The model cannot say it: it validates a contained object without ``resourceType`` as the bare
    ``Resource`` (so it would be stored), and an unknown type fails with a KeyError. A lone object
    stands for a list of one, as the lenient repair will store it.
    """
    contained = resource.get("contained")
    items = [contained] if isinstance(contained, Mapping) else contained
    if not isinstance(items, list):
        return  # the model words what is wrong
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        here = f"{where}.contained[{index}]"
        kind = item.get("resourceType")
        if not isinstance(kind, str) or _model_class(kind) is None:
            raise InvalidResource(
                f"A contained resource needs the resourceType of a FHIR R4 resource, not {kind!r}",
                element=f"{here}.resourceType",
            )
        _check_contained(item, here)


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
