"""The category table: lookups, links and visit/encounter selection."""

from __future__ import annotations

import pytest

from fhirsync import categories
from fhirsync.errors import UnknownResourceType


def test_issue_fhir_types_are_all_served() -> None:
    wanted = {
        "Patient",
        "Person",
        "RelatedPerson",
        "Practitioner",
        "Location",
        "Encounter",
        "EpisodeOfCare",
        "Observation",
        "Condition",
        "DiagnosticReport",
        "AllergyIntolerance",
        "Immunization",
        "Group",
        "Medication",
        "MedicationRequest",
        "MedicationDispense",
        "ServiceRequest",
        "Task",
    }
    assert wanted <= set(categories.FHIR_TYPES)


def test_rest_resources_are_served() -> None:
    for name in (
        "concept",
        "visittype",
        "form",
        "privilege",
        "program",
        "relationship",
        "drug",
        "user",
    ):
        assert categories.for_rest_resource(name).rest_resource == name


def test_links_follow_the_contract() -> None:
    assert categories.get("patient").links("u1") == {"fhir": "/ws/fhir2/R4/Patient/u1"}
    assert categories.get("concept").links("c1") == {"rest": "/ws/rest/v1/concept/c1?v=full"}


def test_visit_and_encounter_are_told_apart_by_tag() -> None:
    def enc(code: str | None) -> dict[str, object]:
        tags = [{"system": categories.ENCOUNTER_TAG_SYSTEM, "code": code}] if code else []
        return {"resourceType": "Encounter", "meta": {"tag": tags}}

    assert categories.for_fhir_resource(enc("visit")).name == "visit"
    assert categories.for_fhir_resource(enc("encounter")).name == "encounter"
    assert categories.for_fhir_resource(enc(None)).name == "encounter"


def test_unknown_names_raise() -> None:
    with pytest.raises(UnknownResourceType):
        categories.get("spaceship")
    with pytest.raises(UnknownResourceType):
        categories.for_fhir_type("Spaceship")


def test_dependency_order_puts_owners_first() -> None:
    order = categories.ORDER
    assert order["location"] < order["patient"] < order["visit"] < order["encounter"]
    assert order["encounter"] < order["observation"]
    assert order["person"] < order["person_name"]
