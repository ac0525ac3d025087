"""The category table: every kind of record fhirsync syncs, in dependency order.

A category is the OpenMRS feed category (``patient``, ``visit``, ...). Each row says which FHIR R4
type (if any) and which OpenMRS REST resource (if any) carries it, how a delete is represented, and
how its feed links are built. Nothing else in the code base hard-codes this list: adding a FHIR type
is one row here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fhirsync.errors import UnknownResourceType

DeleteState = Literal["voided", "retired"]

FHIR_BASE = "/ws/fhir2/R4"
REST_BASE = "/ws/rest/v1"
ORIGIN_HEADER = "X-Fhirsync-Origin"
"""Sent with a pushed write: the node where the change began (the sender or a node below it)."""
ENCOUNTER_TAG_SYSTEM = "http://fhir.openmrs.org/ext/encounter-tag"


@dataclass(frozen=True, slots=True)
class Category:
    """One row of the category table."""

    name: str
    title: str
    openmrs_class: str
    fhir_type: str | None = None
    rest_resource: str | None = None
    delete_state: DeleteState = "voided"
    owner: str | None = None
    """For sub-resources (person_name, ...): the category whose record owns this one."""
    encounter_tag: str | None = None
    """For FHIR types shared by several categories: the ``meta.tag`` code that selects this one."""
    java_rest_template: str | None = None
    """The OpenMRS REST link template, for categories we only read from Java feeds."""

    @property
    def is_fhir(self) -> bool:
        """True when the record is stored and served as a FHIR R4 resource."""
        return self.fhir_type is not None

    @property
    def is_subresource(self) -> bool:
        """True for person_name and its kin, which sync through their owner."""
        return self.owner is not None

    def links(self, uuid: str) -> dict[str, str]:
        """The feed-entry links of one record of this category on a fhirsync node."""
        out: dict[str, str] = {}
        if self.fhir_type is not None:
            out["fhir"] = f"{FHIR_BASE}/{self.fhir_type}/{uuid}"
        if self.rest_resource is not None:
            out["rest"] = f"{REST_BASE}/{self.rest_resource}/{uuid}?v=full"
        return out

    def link_templates(self) -> dict[str, str]:
        """Link templates with ``{uuid}`` (and ``{parent-uuid}`` for sub-resources)."""
        out = self.links("{uuid}")
        if self.java_rest_template is not None:
            out.setdefault("rest", self.java_rest_template)
        return out


def _c(name: str, title: str, cls: str, **kw: Any) -> Category:
    return Category(name=name, title=title, openmrs_class=f"org.openmrs.{cls}", **kw)


def _sub(name: str, title: str, cls: str, owner: str, path: str) -> Category:
    template = f"{REST_BASE}/{owner}/{{parent-uuid}}/{path}/{{uuid}}?v=full"
    return _c(name, title, cls, owner=owner, java_rest_template=template)


# Dependency order: a record's references come before it.
CATEGORIES: tuple[Category, ...] = (
    _c("location", "Location", "Location", fhir_type="Location", delete_state="retired"),
    _c("concept", "Concept", "Concept", rest_resource="concept", delete_state="retired"),
    _c("visittype", "Visit Type", "VisitType", rest_resource="visittype", delete_state="retired"),
    _c("privilege", "Privilege", "Privilege", rest_resource="privilege", delete_state="retired"),
    _c("form", "Form", "Form", rest_resource="form", delete_state="retired"),
    _c("program", "Program", "Program", rest_resource="program", delete_state="retired"),
    _c("drug", "Drug", "Drug", rest_resource="drug", delete_state="retired"),
    _c("medication", "Medication", "Drug", fhir_type="Medication", delete_state="retired"),
    _c("user", "User", "User", rest_resource="user", delete_state="retired"),
    _c("provider", "Provider", "Provider", fhir_type="Practitioner", delete_state="retired"),
    _c("person", "Person", "Person", fhir_type="Person"),
    _c("patient", "Patient", "Patient", fhir_type="Patient"),
    _sub("person_name", "Person Name", "PersonName", "person", "name"),
    _sub("person_address", "Person Address", "PersonAddress", "person", "address"),
    _sub("person_attribute", "Person Attribute", "PersonAttribute", "person", "attribute"),
    _sub("patient_identifier", "Patient Identifier", "PatientIdentifier", "patient", "identifier"),
    _c("relatedperson", "Related Person", "Relationship", fhir_type="RelatedPerson"),
    _c("relationship", "Relationship", "Relationship", rest_resource="relationship"),
    _c("cohort", "Cohort", "Cohort", fhir_type="Group"),
    _c("visit", "Visit", "Visit", fhir_type="Encounter", encounter_tag="visit"),
    _c("encounter", "Encounter", "Encounter", fhir_type="Encounter", encounter_tag="encounter"),
    _c("episodeofcare", "Episode of Care", "PatientProgram", fhir_type="EpisodeOfCare"),
    _c("observation", "Observation", "Obs", fhir_type="Observation"),
    _c("allergy", "Allergy", "Allergy", fhir_type="AllergyIntolerance"),
    _c("condition", "Condition", "Condition", fhir_type="Condition"),
    _c("diagnosticreport", "Diagnostic Report", "DiagnosticReport", fhir_type="DiagnosticReport"),
    _c("immunization", "Immunization", "Obs", fhir_type="Immunization"),
    _c("drug_order", "Drug Order", "DrugOrder", fhir_type="MedicationRequest"),
    _c("test_order", "Test Order", "TestOrder", fhir_type="ServiceRequest"),
    _c(
        "medicationdispense",
        "Medication Dispense",
        "MedicationDispense",
        fhir_type="MedicationDispense",
    ),
    _c("task", "Task", "FhirTask", fhir_type="Task"),
)

_BY_NAME: Mapping[str, Category] = {c.name: c for c in CATEGORIES}
_BY_REST: Mapping[str, Category] = {c.rest_resource: c for c in CATEGORIES if c.rest_resource}
_BY_FHIR: dict[str, list[Category]] = {}
for _cat in CATEGORIES:
    if _cat.fhir_type is not None:
        _BY_FHIR.setdefault(_cat.fhir_type, []).append(_cat)

ORDER: Mapping[str, int] = {c.name: i for i, c in enumerate(CATEGORIES)}
FHIR_TYPES: tuple[str, ...] = tuple(_BY_FHIR)
ACTIONS: tuple[str, ...] = (
    "CREATED",
    "UPDATED",
    "VOIDED",
    "UNVOIDED",
    "RETIRED",
    "UNRETIRED",
    "DELETED",
)
_UUIDISH = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # fullmatch: "$" also matches before a final "\n"


def all_categories() -> Iterable[Category]:
    """Every category in dependency order."""
    return CATEGORIES


def get(name: str) -> Category:
    """The category called ``name`` (case-insensitive); UnknownResourceType if there is none."""
    cat = _BY_NAME.get(name.lower())
    if cat is None:
        raise UnknownResourceType(f"Category {name!r} is not supported")
    return cat


def find(name: str) -> Category | None:
    """The category called ``name`` (case-insensitive), or None."""
    return _BY_NAME.get(name.lower())


def for_rest_resource(resource: str) -> Category:
    """The category served at ``/ws/rest/v1/{resource}``; UnknownResourceType if none."""
    cat = _BY_REST.get(resource.lower())
    if cat is None:
        raise UnknownResourceType(f"REST resource {resource!r} is not served by this node")
    return cat


def for_fhir_type(resource_type: str) -> list[Category]:
    """The categories stored as ``resource_type`` (Encounter has two).

    Raises UnknownResourceType when the type is not served.
    """
    cats = _BY_FHIR.get(resource_type)
    if not cats:
        raise UnknownResourceType(f"Resource type {resource_type!r} is not supported")
    return cats


def for_fhir_resource(resource: Mapping[str, Any]) -> Category:
    """The category of one FHIR resource, using ``meta.tag`` where a type has several."""
    cats = for_fhir_type(str(resource.get("resourceType")))
    if len(cats) == 1:
        return cats[0]
    meta = resource.get("meta")
    tags = meta.get("tag", []) if isinstance(meta, Mapping) else []
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, Mapping) and tag.get("system") == ENCOUNTER_TAG_SYSTEM:
            for cat in cats:
                if cat.encounter_tag == tag.get("code"):
                    return cat
    # An untagged Encounter is an encounter, as in OpenMRS's FHIR module.
    return next((c for c in cats if c.encounter_tag == "encounter"), cats[0])


def is_valid_id(value: str) -> bool:
    """True when ``value`` is a legal FHIR id (the ids we share across nodes are uuids)."""
    return _UUIDISH.fullmatch(value) is not None
