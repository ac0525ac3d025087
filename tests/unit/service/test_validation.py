"""Validation of incoming FHIR resources: models, required bindings, lenient lists, elements."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.service.json_paths import json_paths

from fhirsync.errors import InvalidResource, UnknownResourceType
from fhirsync.service.validation import normalize_resource, validate_resource

# STU3-only samples: ProcedureRequest does not exist in R4, the _r3 Observation uses `context`.
_STU3_ONLY = {"ObservationWebTest_create_r3.json", "ProcedureRequestWebTest_update.json"}


def _samples(reference: Path) -> list[Path]:
    folder = reference / "openmrs" / "fhir2-r4-samples"
    return sorted(p for p in folder.glob("*.json") if p.name not in _STU3_ONLY)


def _patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "0b42f99b-776e-4388-8f6f-84357ae2a8fb",
        "identifier": [{"use": "official", "system": "urn:oid:1.2.3", "value": "MRN1"}],
        "name": [{"use": "official", "family": "Okafor", "given": ["Amara"]}],
        "telecom": [{"system": "phone", "value": "+1-555-0100", "use": "mobile"}],
        "gender": "female",
        "birthDate": "1990-04-01",
        "address": [{"use": "home", "type": "both", "city": "Accra", "country": "GH"}],
        "contact": [{"name": {"family": "Okafor"}, "gender": "male"}],
    }


def _rejects(resource: dict[str, Any], element: str, expected_type: str | None = None) -> str:
    with pytest.raises(InvalidResource) as info:
        validate_resource(resource, expected_type)
    assert info.value.element == element, str(info.value)
    return info.value.message


def test_every_r4_sample_validates(reference_dir: Path) -> None:
    samples = _samples(reference_dir)
    assert len(samples) >= 9
    for path in samples:
        resource = json.loads(path.read_bytes())
        validate_resource(resource)
        validate_resource(resource, resource["resourceType"])


def test_stu3_samples_are_rejected(reference_dir: Path) -> None:
    folder = reference_dir / "openmrs" / "fhir2-r4-samples"
    with pytest.raises(UnknownResourceType):
        validate_resource(json.loads((folder / "ProcedureRequestWebTest_update.json").read_bytes()))
    r3 = json.loads((folder / "ObservationWebTest_create_r3.json").read_bytes())
    _rejects(r3, "Observation.context")


def test_lone_object_for_a_list_is_wrapped_like_hapi_lenient_parsing(reference_dir: Path) -> None:
    path = reference_dir / "openmrs" / "fhir2-r4-samples" / "PatientWebTest_create.json"
    original = json.loads(path.read_bytes())
    before = copy.deepcopy(original)
    fixed = normalize_resource(original)
    assert isinstance(fixed["identifier"], list)
    assert fixed["identifier"][0] == original["identifier"]
    assert original == before  # the caller's dict is never modified
    assert {k: v for k, v in fixed.items() if k != "identifier"} == {
        k: v for k, v in original.items() if k != "identifier"
    }


def test_valid_resource_is_returned_unchanged() -> None:
    patient = _patient()
    assert normalize_resource(patient) is patient


@pytest.mark.parametrize(
    ("path", "value", "element"),
    [
        (("gender",), "femme", "Patient.gender"),
        (("name", 0, "use"), "formal", "Patient.name[0].use"),
        (("telecom", 0, "system"), "telegraph", "Patient.telecom[0].system"),
        (("telecom", 0, "use"), "cell", "Patient.telecom[0].use"),
        (("address", 0, "use"), "holiday", "Patient.address[0].use"),
        (("address", 0, "type"), "virtual", "Patient.address[0].type"),
        (("identifier", 0, "use"), "primary", "Patient.identifier[0].use"),
        (("contact", 0, "gender"), "m", "Patient.contact[0].gender"),
    ],
)
def test_required_binding_codes_of_patient(
    path: tuple[str | int, ...], value: str, element: str
) -> None:
    patient = _patient()
    node: Any = patient
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    message = _rejects(patient, element)
    assert repr(value) in message


@pytest.mark.parametrize(
    ("resource", "element"),
    [
        ({"resourceType": "Person", "gender": "femme"}, "Person.gender"),
        ({"resourceType": "Practitioner", "gender": "F"}, "Practitioner.gender"),
        (
            {"resourceType": "RelatedPerson", "patient": {"reference": "Patient/1"}, "gender": "x"},
            "RelatedPerson.gender",
        ),
        (
            {"resourceType": "Encounter", "status": "done", "class": {"code": "AMB"}},
            "Encounter.status",
        ),
        (
            {"resourceType": "Observation", "status": "ok", "code": {"text": "x"}},
            "Observation.status",
        ),
        (
            {
                "resourceType": "Condition",
                "subject": {"reference": "Patient/1"},
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "ongoing",
                        }
                    ]
                },
            },
            "Condition.clinicalStatus.coding[0].code",
        ),
        (
            {
                "resourceType": "AllergyIntolerance",
                "patient": {"reference": "Patient/1"},
                "criticality": "severe",
            },
            "AllergyIntolerance.criticality",
        ),
        (
            {
                "resourceType": "AllergyIntolerance",
                "patient": {"reference": "Patient/1"},
                "category": ["food", "pollen"],
            },
            "AllergyIntolerance.category[1]",
        ),
        (
            {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "wish",
                "subject": {"reference": "Patient/1"},
                "medicationCodeableConcept": {"text": "x"},
            },
            "MedicationRequest.intent",
        ),
        (
            {
                "resourceType": "ServiceRequest",
                "status": "open",
                "intent": "order",
                "subject": {"reference": "Patient/1"},
            },
            "ServiceRequest.status",
        ),
        (
            {
                "resourceType": "Immunization",
                "status": "given",
                "vaccineCode": {"text": "x"},
                "patient": {"reference": "Patient/1"},
                "occurrenceDateTime": "2020-01-01",
            },
            "Immunization.status",
        ),
        ({"resourceType": "Task", "status": "todo", "intent": "order"}, "Task.status"),
        (
            {"resourceType": "DiagnosticReport", "status": "done", "code": {"text": "x"}},
            "DiagnosticReport.status",
        ),
        (
            {
                "resourceType": "EpisodeOfCare",
                "status": "open",
                "patient": {"reference": "Patient/1"},
            },
            "EpisodeOfCare.status",
        ),
        ({"resourceType": "Group", "type": "people", "actual": True}, "Group.type"),
        (
            {
                "resourceType": "MedicationDispense",
                "status": "handed-out",
                "medicationCodeableConcept": {"text": "x"},
            },
            "MedicationDispense.status",
        ),
        (
            {"resourceType": "Location", "address": {"use": "holiday"}},
            "Location.address.use",
        ),
    ],
)
def test_required_binding_codes_per_type(resource: dict[str, Any], element: str) -> None:
    _rejects(resource, element)


def test_condition_codings_of_other_systems_are_translations() -> None:
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/1"},
        "clinicalStatus": {"coding": [{"system": "http://example.org/local", "code": "ongoing"}]},
    }
    validate_resource(condition)


@pytest.mark.parametrize(
    ("change", "element", "words"),
    [
        ({"birthDate": "1st of May"}, "Patient.birthDate", "Date"),
        ({"name": [{"given": [7]}]}, "Patient.name[0].given[0]", "string"),
        ({"contact": [{"name": {"family": 3}}]}, "Patient.contact[0].name.family", "string"),
        ({"shoeSize": 44}, "Patient.shoeSize", "Unknown element"),
        ({"meta": {"lastUpdated": "yesterday"}}, "Patient.meta.lastUpdated", "Instant"),
        ({"deceasedBoolean": True, "deceasedDateTime": "2020-01-01"}, "Patient", "deceased"),
    ],
)
def test_model_errors_name_the_element(change: dict[str, Any], element: str, words: str) -> None:
    patient = {**_patient(), **change}
    assert words in _rejects(patient, element)


def test_missing_required_element() -> None:
    message = _rejects({"resourceType": "Observation", "status": "final"}, "Observation.code")
    assert "required" in message


def test_resource_type_checks() -> None:
    _rejects({"gender": "male"}, "resourceType")
    _rejects({"resourceType": 3}, "resourceType")
    _rejects(_patient(), "resourceType", expected_type="Person")
    for unknown in ("Spaceship", "HumanName", "patient", "Bundle/x"):
        with pytest.raises(UnknownResourceType):
            validate_resource({"resourceType": unknown})
    with pytest.raises(InvalidResource):
        validate_resource([_patient()])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("contained", "element"),
    [
        ([{"resourceType": "Spaceship"}], "Patient.contained[0].resourceType"),
        ([{"id": "no-type"}], "Patient.contained[0].resourceType"),
        ([{"resourceType": 5}], "Patient.contained[0].resourceType"),
        ([{"resourceType": ["Organization"]}], "Patient.contained[0].resourceType"),
        ({"resourceType": "Spaceship"}, "Patient.contained[0].resourceType"),  # a lone object
        (
            [{"resourceType": "Organization", "name": "x"}, {"resourceType": "HumanName"}],
            "Patient.contained[1].resourceType",
        ),
        (
            [{"resourceType": "Organization", "contained": [{"resourceType": "Spaceship"}]}],
            "Patient.contained[0].contained[0].resourceType",
        ),
    ],
)
def test_contained_resources_need_a_resource_type(contained: Any, element: str) -> None:
    """fhir.resources takes a contained object without resourceType for a bare Resource (and
    stores it), and fails with a KeyError on a type it does not know."""
    message = _rejects({**_patient(), "contained": contained}, element)
    assert "resourceType" in message


def test_a_resource_nested_in_a_contained_one_needs_a_known_type() -> None:
    nested = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {}}]}
    nested["entry"][0]["resource"] = {"resourceType": "Spaceship"}
    assert "Spaceship" in _rejects({**_patient(), "contained": [nested]}, "Patient")


def test_a_contained_resource_of_a_known_type_is_accepted() -> None:
    patient = {**_patient(), "contained": [{"resourceType": "Organization", "id": "o"}]}
    assert normalize_resource(patient) is patient


def test_memoised_validation_matches_plain_fhir_resources(reference_dir: Path) -> None:
    """Every one-element mutation is accepted or rejected exactly as fhir.resources does, at the
    same location, whether the cache is cold or warm."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    from fhirsync.service import model_memo

    samples = [json.loads(p.read_bytes()) for p in _samples(reference_dir)]
    # Valid bases (lone objects already wrapped), so one mutation makes one error to locate.
    bases = [_patient()] + [dict(normalize_resource(s)) for s in samples]
    replacements: list[Any] = [5, "x", None, [], {}, {"bogus": 1}, [None], 1.5, True, [{}]]
    cases = 0
    for base in bases:
        model = get_fhir_model_class(base["resourceType"])
        for index, path in enumerate(json_paths(base)):
            mutated = copy.deepcopy(base)
            node: Any = mutated
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = replacements[index % len(replacements)]
            try:
                model.model_validate(mutated)
                expected = None
            except ValidationError as exc:
                expected = tuple(exc.errors()[0]["loc"])
            for _ in range(2):  # cold, then warm cache
                try:
                    model_memo.build(model, mutated)
                    found = None
                except model_memo.ModelFailure as failure:
                    found = failure.loc
                assert found == expected, (base["resourceType"], path)
            cases += 1
    assert cases > 100


def _code_outcome(check: Any, resource: dict[str, Any]) -> tuple[str, str | None] | None:
    try:
        check(resource)
    except InvalidResource as exc:
        return exc.message, exc.element
    return None


_CODE_VALUES = st.one_of(
    st.sampled_from(["male", "female", "home", "official", "phone", "active", "x", "", "Male"]),
    st.sampled_from([None, 3, ["home", "work"], ["home", "cell"], [["home"]]]),
    st.text(max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(
    values=st.lists(_CODE_VALUES, min_size=8, max_size=8),
    clinical=st.sampled_from(["active", "ongoing", None, 5]),
    system=st.sampled_from(
        ["http://terminology.hl7.org/CodeSystem/condition-clinical", "http://example.org", None]
    ),
)
def test_one_pass_code_check_matches_the_ordered_walk(
    values: list[Any], clinical: Any, system: Any
) -> None:
    """The one-pass check and the ordered walk accept the same codes, and every error is the
    ordered walk's (the first failing rule, worded as before)."""
    from fhirsync.service import codes

    patient = _patient()
    patient["gender"] = values[0]
    patient["name"][0]["use"] = values[1]
    patient["telecom"] = [{"system": values[2], "use": values[3]}, {"use": "home"}]
    patient["address"][0]["type"] = values[4]
    patient["identifier"][0]["use"] = values[5]
    patient["contact"] = [{"gender": values[6], "name": {"use": values[7]}}]
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/1"},
        "identifier": [{"use": values[5]}],
        "clinicalStatus": {"coding": [{"system": system, "code": clinical}, {"code": "x"}]},
    }
    for resource in (patient, condition):
        try:
            expected = _code_outcome(codes.check_codes_in_order, resource)
        except TypeError:  # an unhashable value at a code path: never past the models
            continue
        assert _code_outcome(codes.check_codes, resource) == expected
