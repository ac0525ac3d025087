"""Validation of incoming FHIR R4 resources (fhir.resources R4B models plus required bindings).

Validation only *checks*: the caller stores its own dict (canonical JSON of the original), never a
model's re-serialisation, because re-serialising changes the bytes (``.512+00:00`` becomes
``.512000Z``) and with them the content hash.

What runs, in order:

1. :func:`~fhirsync.service.fastcheck.fast_accepts`, a conservative check compiled from the model
   metadata that answers "certainly valid" (about 20 µs for a generated Patient) or "not sure";
2. only when it is not sure, the fhir.resources R4B model itself with a memo of validated nested
   elements (:mod:`~fhirsync.service.model_memo`): the judge of what is valid, the wording of every
   structural error, and the lenient list repair (both in :mod:`~fhirsync.service.structure`);
3. the required-binding codes (:mod:`~fhirsync.service.codes`), with a one-pass check for the
   common all-valid case and the ordered walk that words the first error otherwise.

The fast path never accepts what the model rejects (``tests/unit/service/test_fastcheck.py``), so
accept/reject decisions and error messages are those of the model either way.

Two things fhir.resources does not do are done here:

- the codes of required bindings (``gender: "femme"`` passes the models), checked from a small
  table of paths per resource type (:mod:`~fhirsync.service.bindings`) after the models accept
  the structure;
- HAPI's lenient parsing, which OpenMRS relies on: a single object where the model wants a list
  (OpenMRS's own sample Patient sends ``"identifier": {...}``). :func:`normalize_resource` wraps
  such values in a list, and :func:`validate_resource` accepts what it can normalise.

Errors are :class:`~fhirsync.errors.InvalidResource` whose ``element`` is a FHIRPath-like location
(``Patient.contact[0].name.family``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fhirsync.errors import InvalidResource
from fhirsync.service import fastcheck
from fhirsync.service.codes import check_codes
from fhirsync.service.structure import model_for, validate_structure

__all__ = ["normalize_resource", "validate_resource"]


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
    fixed = validate_structure(model_for(resource, expected_type), resource)
    check_codes(fixed)
    return fixed


def prepare(resource_types: Iterable[str]) -> None:
    """Load the models and compile the fast checks of these FHIR resource types now.

    ``serve`` calls this at start: the first write of a type otherwise pays ~0.1 s for it.
    """
    for name in resource_types:
        fastcheck.prepare(model_for({"resourceType": name}, name))
