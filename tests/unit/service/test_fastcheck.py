"""The fast validation path never accepts what fhir.resources rejects, and is really used.

The property under test: ``fast_accepts(model, x)`` implies ``model.model_validate(x)`` succeeds.
It is checked on the generated benchmark Patients, on every OpenMRS sample the models accept, on
exhaustive one-value replacements of them, and on hypothesis-generated mutations (dropped
elements, wrong primitive types, bad dates, whitespace, unknown keys, nulls, empty values, a
second value of a choice group, nested garbage).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.extension import Extension
from fhir_core.types import CodeType, StringType
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict, TypeAdapter, field_validator
from tests.unit.service.json_paths import json_paths

from fhirsync.service import structure
from fhirsync.service.fastcheck import fast_accepts
from fhirsync.service.validation import normalize_resource

SHARED = Path(__file__).resolve().parents[4] / "shared"
OPENMRS = SHARED / "reference" / "openmrs"
GENERATOR = SHARED / "bench" / "pouchdb-peer" / "gen_fhir.py"


def _model(resource: dict[str, Any]) -> Any:
    return get_fhir_model_class(resource["resourceType"])


def _model_accepts(resource: Any, model: Any = None) -> bool:
    try:
        (model or _model(resource)).model_validate(resource)
    except Exception:  # noqa: BLE001 - any failure of the model counts as a rejection
        return False
    return True


def _assert_implication(resource: dict[str, Any], model: Any = None) -> bool:
    """Assert fast -> model on ``resource``; return what the fast path said."""
    model = model or _model(resource)
    fast = fast_accepts(model, resource)
    if fast:
        assert _model_accepts(resource, model), json.dumps(resource, default=str)[:2000]
    return fast


# --- data -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The 2000 Patients of the benchmark generator (seed 42), as the benchmarks use them."""
    out = tmp_path_factory.mktemp("gen") / "patients.ndjson"
    subprocess.run([sys.executable, str(GENERATOR), "2000", str(out)], check=True, timeout=120)
    patients = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(patients) == 2000
    return patients


def _openmrs_resources() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON object under reference/openmrs that names a FHIR R4B resource type."""
    for path in sorted(OPENMRS.rglob("*.json")):
        try:
            data = json.loads(path.read_bytes())
        except ValueError:
            continue  # the module's deliberately broken configuration samples
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            continue
        try:
            get_fhir_model_class(data["resourceType"])
        except (KeyError, ValueError, AttributeError, ImportError):
            continue  # STU3-only ProcedureRequest
        yield path.name, data


def _valid_openmrs() -> list[dict[str, Any]]:
    """The OpenMRS samples the models accept, as sent or once lone objects are wrapped."""
    out = []
    for _name, data in _openmrs_resources():
        if _model_accepts(data):
            out.append(data)
        try:
            fixed = dict(normalize_resource(data))
        except Exception:  # noqa: BLE001 - the STU3 Observation: not a valid base
            continue
        if fixed is not data and _model_accepts(fixed):
            out.append(fixed)
    return out


def _rich_observation() -> dict[str, Any]:
    """Most primitive types of R4B in one valid resource (extensions carry the rare ones)."""
    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": {"lastUpdated": "2024-01-02T03:04:05.123+01:00", "versionId": "3"},
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Weight</div>',
        },
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "29463-7",
                    "display": "Body weight",
                    "userSelected": True,
                }
            ],
            "text": "Weight",
        },
        "subject": {"reference": "Patient/123", "type": "Patient"},
        "effectiveDateTime": "2024-01-02T03:04:05+01:00",
        "issued": "2024-01-02T03:04:05.5Z",
        "valueQuantity": {
            "value": 72.5,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
        "note": [{"text": "Some *markdown*", "time": "2024-01"}],
        "referenceRange": [
            {"low": {"value": 50}, "high": {"value": 1e2}, "age": {"low": {"value": 18}}}
        ],
        "component": [
            {"code": {"text": "a"}, "valueInteger": 5},
            {"code": {"text": "b"}, "valueTime": "10:20:30.25"},
            {"code": {"text": "c"}, "valueBoolean": False},
            {"code": {"text": "d"}, "valueString": "x y"},
            {"code": {"text": "e"}, "valuePeriod": {"start": "2020", "end": "2021-05"}},
            {
                "code": {"text": "f"},
                "valueSampledData": {
                    "origin": {"value": 0},
                    "period": 0.5,
                    "dimensions": 1,
                    "data": "1 2 3",
                },
            },
        ],
        "extension": [
            {"url": "http://x.org/b64", "valueBase64Binary": "aGVsbG8="},
            {"url": "http://x.org/pos", "valuePositiveInt": 3},
            {"url": "http://x.org/uns", "valueUnsignedInt": 0},
            {"url": "http://x.org/oid", "valueOid": "urn:oid:1.2.840"},
            {"url": "http://x.org/url", "valueUrl": "https://example.org/a?b=c"},
            {"url": "http://x.org/can", "valueCanonical": "http://hl7.org/fhir/ValueSet/x|1.0"},
            {"url": "http://x.org/md", "valueMarkdown": "**bold**"},
            {"url": "http://x.org/dec", "valueDecimal": -0.001},
            {"url": "http://x.org/date", "valueDate": "2024-02-29"},
            {"url": "http://x.org/inst", "valueInstant": "2024-02-29T23:59:59.999999Z"},
            {"url": "http://x.org/id", "valueId": "abc-1.2"},
            {"url": "http://x.org/code", "valueCode": "a b"},
            {"url": "http://x.org/int", "valueInteger": -7},
        ],
    }


def _rich_patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "active": True,
        "name": [{"use": "official", "family": "Müller", "given": ["Zoë", "Ann"]}],
        "gender": "other",
        "birthDate": "1970",
        "deceasedDateTime": "2020-02-29T10:00:00-05:00",
        "multipleBirthInteger": 2,
        "photo": [
            {
                "contentType": "image/png",
                "data": "iVBORw0KGgo=",
                "size": 8,
                "url": "http://example.org/p.png",
                "creation": "2019-03",
            }
        ],
        "contact": [
            {
                "relationship": [{"text": "mother"}],
                "name": {"family": "Okafor", "period": {"start": "2001-01-01"}},
                "gender": "female",
                "telecom": [{"system": "phone", "value": "555", "rank": 2}],
            }
        ],
        "communication": [{"language": {"text": "English"}, "preferred": False}],
        "link": [{"other": {"reference": "Patient/2"}, "type": "seealso"}],
    }


def _medication_request() -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/1"},
        "medicationCodeableConcept": {"text": "Aspirin"},
        "dosageInstruction": [
            {
                "sequence": 1,
                "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 81, "unit": "mg"}}],
            }
        ],
    }


@pytest.fixture(scope="module")
def bases(generated: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Valid resources to mutate: rich hand-made ones, the OpenMRS samples, a few Patients."""
    return [
        _rich_observation(),
        _rich_patient(),
        _medication_request(),
        *_valid_openmrs(),
        generated[0],
    ]


# --- the fast path is used ------------------------------------------------------------------------


def test_every_generated_patient_takes_the_fast_path(
    generated: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    patient_model = get_fhir_model_class("Patient")
    assert all(fast_accepts(patient_model, p) for p in generated)
    # And normalize_resource uses it: the model path is never reached for them.
    monkeypatch.setattr(structure, "build", _fail_if_called)
    for patient in generated[:200]:
        assert normalize_resource(patient, "Patient") is patient
    assert _model_accepts(generated[0])


def _fail_if_called(*_args: object) -> None:
    raise AssertionError("the full model path ran for a resource the fast path should take")


def test_valid_openmrs_samples_of_common_types_take_the_fast_path() -> None:
    valid = _valid_openmrs()
    types = {r["resourceType"] for r in valid}
    assert {"Patient", "Encounter", "Observation", "Location", "Practitioner"} <= types
    for resource in valid:
        assert fast_accepts(_model(resource), resource), resource["resourceType"]


@pytest.mark.parametrize(
    "resource",
    [_rich_observation(), _rich_patient(), _medication_request()],
    ids=["Observation", "Patient", "MedicationRequest"],
)
def test_rich_resources_take_the_fast_path(resource: dict[str, Any]) -> None:
    assert _model_accepts(resource)
    assert fast_accepts(_model(resource), resource)


def test_fast_path_agrees_with_the_model_on_every_generated_patient(
    generated: list[dict[str, Any]],
) -> None:
    for patient in generated[::10]:
        assert _assert_implication(patient)


# --- what the fast path declines ----------------------------------------------------------------


def _patient() -> dict[str, Any]:
    return _rich_patient()


@pytest.mark.parametrize(
    ("change", "model_rejects"),
    [
        ({"shoeSize": 44}, True),  # unknown key
        ({"gender": None}, False),  # None (the model drops it)
        ({"name": []}, False),  # empty list
        ({"maritalStatus": {}}, False),  # empty object
        ({"gender": ""}, True),  # empty string
        ({"_gender": {"extension": [{"url": "http://x.org", "valueString": "x"}]}}, False),
        ({"contained": [{"resourceType": "Organization", "name": "x"}]}, False),
        ({"name": {"family": "Lone"}}, True),  # a lone object where a list is expected
        ({"name": [{"family": " Okafor"}]}, False),  # leading whitespace
        ({"deceasedBoolean": True}, True),  # a second value of the deceased[x] choice
        ({"multipleBirthInteger": True}, False),  # bool for an int (pydantic's lax mode)
        ({"multipleBirthInteger": 2.0}, False),
        ({"active": "true"}, False),
        ({"birthDate": "2023-02-30"}, True),
        ({"id": "x" * 65}, False),  # fhir_core allows 255; FHIR (and the fast path) 64
        ({"class_fhir": {"code": "x"}}, True),
        ({"fhir_comments": "x"}, False),
        ({"link": [{"other": {"reference": "Patient/2"}}]}, True),  # link.type is required
        ({"photo": [{"url": "urn:uuid:x", "data": "a"}]}, True),  # not canonical base64
    ],
)
def test_unusual_input_is_not_taken_by_the_fast_path(
    change: dict[str, Any], model_rejects: bool
) -> None:
    resource = {**_patient(), **change}
    assert not fast_accepts(_model(resource), resource)
    assert _model_accepts(resource) is not model_rejects


def test_missing_required_choice_and_element_are_declined() -> None:
    request = _medication_request()
    del request["medicationCodeableConcept"]
    assert not fast_accepts(_model(request), request)
    assert not _model_accepts(request)
    observation = _rich_observation()
    del observation["code"]
    assert not fast_accepts(_model(observation), observation)
    assert not _model_accepts(observation)


def test_uuid_and_leap_seconds_are_left_to_the_model() -> None:
    for key, value in [
        ("valueUuid", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"),
        ("valueDateTime", "2016-12-31T23:59:60Z"),
        ("valueTime", "23:59:60"),
        ("valueDateTime", "2016-12-31T23:59:59.1234567890Z"),
    ]:
        extension = {"url": "http://x.org", key: value}
        assert not fast_accepts(Extension, extension), value
        assert _model_accepts_extension(extension)


def _model_accepts_extension(extension: dict[str, Any]) -> bool:
    try:
        Extension.model_validate(extension)
    except Exception:  # noqa: BLE001
        return False
    return True


def test_models_that_validate_differently_are_left_to_the_model() -> None:
    """A stricter configuration or an extra validator (say after a library upgrade) turns the fast
    path off for that model instead of letting it accept what the model now rejects."""
    patient_model = get_fhir_model_class("Patient")

    class StrictPatient(patient_model):  # type: ignore[misc, valid-type]
        model_config = ConfigDict(strict=True)

    class NoOtherGender(patient_model):  # type: ignore[misc, valid-type]
        @field_validator("gender")
        @classmethod
        def _no_other(cls, value: str | None) -> str | None:
            if value == "other":
                raise ValueError("no")
            return value

    resource = _patient()
    assert fast_accepts(patient_model, resource)
    for model in (StrictPatient, NoOtherGender):
        assert not fast_accepts(model, resource)
        assert not _model_accepts(resource, model)


def test_absurd_nesting_is_left_to_the_model() -> None:
    extension: dict[str, Any] = {"url": "http://x.org", "valueString": "x"}
    for _ in range(5000):
        extension = {"url": "http://x.org", "extension": [extension]}
    assert not fast_accepts(Extension, extension)


# --- primitive rules against fhir_core ----------------------------------------------------------

_PRIMITIVE_KEYS = [
    "valueString",
    "valueCode",
    "valueId",
    "valueUri",
    "valueUrl",
    "valueCanonical",
    "valueOid",
    "valueMarkdown",
    "valueBase64Binary",
    "valueDecimal",
    "valueInteger",
    "valuePositiveInt",
    "valueUnsignedInt",
    "valueBoolean",
    "valueDate",
    "valueDateTime",
    "valueInstant",
    "valueTime",
]

_TRICKY: list[Any] = [
    "",
    " ",
    "a",
    " a",
    "a ",
    "a  b",
    "a b",
    "a\tb",
    "a\nb",
    "\x1c",
    "a\x1c\x1cb",
    "\x0b",
    "a\ud800",
    "true",
    "1",
    "1.5",
    "-0",
    "01",
    "1e5",
    "abc-1.2",
    "x" * 64,
    "x" * 65,
    "urn:oid:1.2.3",
    "urn:oid:1.02",
    "urn:oid:3.1",
    "http://example.org",
    "http://exa mple.org",
    "aGVsbG8=",
    "aGVsbG8",
    "!!!!",
    "====",
    "2024",
    "2024-02",
    "2024-13",
    "2024-00",
    "2024-02-29",
    "2023-02-29",
    "2023-02-30",
    "2023-04-31",
    "0000-01-01",
    "0001-01-01",
    "9999-12-31",
    "2023-1-01",
    "20230101",
    "2023-01-01T10:00:00Z",
    "2023-01-01T10:00:00",
    "2023-01-01T10:00Z",
    "2023-01-01T24:00:00Z",
    "2023-01-01T23:59:60Z",
    "2023-01-01T10:00:00.123456789Z",
    "2023-01-01T10:00:00.1234567890Z",
    "2023-01-01T10:00:00+14:00",
    "2023-01-01T10:00:00+14:01",
    "2023-01-01T10:00:00-00:00",
    "2023-02-30T10:00:00Z",
    "2023-01-01 10:00:00Z",
    "10:00:00",
    "10:00:00.5",
    "24:00:00",
    "10:00",
    "10:00:60",
    True,
    False,
    0,
    1,
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    10**20,
    10**400,
    1.0,
    1.5,
    -0.0,
    1e16,
    float("nan"),
    float("inf"),
    None,
    [],
    {},
    ["a"],
    {"a": 1},
]


def test_primitive_rules_never_accept_what_fhir_core_rejects() -> None:
    accepted = 0
    for key in _PRIMITIVE_KEYS:
        for value in _TRICKY:
            extension = {"url": "http://x.org", key: value}
            if fast_accepts(Extension, extension):
                accepted += 1
                assert _model_accepts_extension(extension), (key, value)
    assert accepted > 60  # the rules accept plenty of the valid values


def test_string_and_code_rules_hold_for_every_bmp_character() -> None:
    """The first-character argument of the String rule and the whitespace argument of the Code
    rule, checked against pydantic's own (Rust) regex for every character that could matter:
    every Unicode whitespace character is in the BMP."""
    strings = TypeAdapter(StringType)
    codes = TypeAdapter(CodeType)
    for point in range(0x10000):
        char = chr(point)
        for value in (char, f"a{char}b", f"{char}a"):
            extension = {"url": "http://x.org", "valueString": value}
            if fast_accepts(Extension, extension):
                strings.validate_python(value)
            extension = {"url": "http://x.org", "valueCode": value}
            if fast_accepts(Extension, extension):
                codes.validate_python(value)


# --- exhaustive one-value replacements --------------------------------------------------------------


def _node(resource: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        resource = resource[step]
    return resource


@pytest.mark.slow
def test_every_single_replacement_and_removal(bases: list[dict[str, Any]]) -> None:
    cases = accepted = 0
    for base in bases:
        model = _model(base)
        resource = copy.deepcopy(base)
        assert _assert_implication(resource, model)
        for path in json_paths(resource):
            # Mutated in place and put back: neither the fast path nor the model changes input.
            parent, key = _node(resource, path[:-1]), path[-1]
            original = parent[key]
            if isinstance(parent, dict):
                del parent[key]
                accepted += _assert_implication(resource, model)
            for value in _TRICKY:
                parent[key] = value
                accepted += _assert_implication(resource, model)
                cases += 1
            parent[key] = original  # (a removed key comes back last: neither check minds)
        assert resource == base
    assert cases > 50_000
    assert accepted > 10_000  # valid replacements are taken too, not only declined


# --- hypothesis mutations -------------------------------------------------------------------------

_CHOICE_PREFIXES = (
    "value",
    "deceased",
    "multipleBirth",
    "effective",
    "medication",
    "onset",
    "occurrence",
    "abatement",
    "timing",
)
_CHOICE_TYPES = ("String", "Boolean", "Integer", "DateTime", "CodeableConcept", "Quantity")
_NAMES = [
    "id",
    "extension",
    "modifierExtension",
    "url",
    "system",
    "code",
    "display",
    "value",
    "text",
    "status",
    "use",
    "period",
    "start",
    "end",
    "reference",
    "bogus",
    "_gender",
    "_status",
    "resourceType",
    "fhir_comments",
    "class_fhir",
    "contained",
    "valueString",
    "valueBoolean",
    "valueInteger",
]


def _dates() -> st.SearchStrategy[str]:
    numbers = st.tuples(
        st.integers(0, 10000),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.sampled_from(["Z", "+01:00", "-14:00", "+14:30", "", "+1:00"]),
        st.sampled_from(["", ".5", ".123456", ".1234567890123"]),
    )
    return numbers.flatmap(
        lambda n: st.sampled_from(
            [
                f"{n[0]:04d}",
                f"{n[0]:04d}-{n[1]:02d}",
                f"{n[0]:04d}-{n[1]:02d}-{n[2]:02d}",
                f"{n[0]:04d}-{n[1]:02d}-{n[2]:02d}T{n[3]:02d}:{n[4]:02d}:{n[4]:02d}{n[6]}{n[5]}",
                f"{n[3]:02d}:{n[4]:02d}:{n[4]:02d}{n[6]}",
            ]
        )
    )


def _values(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(_TRICKY),
        _dates(),
        st.text(max_size=10),
        st.integers(),
        st.floats(),
        st.booleans(),
        st.none(),
        st.lists(leaf, max_size=2),
        st.dictionaries(st.sampled_from(_NAMES), leaf, max_size=2),
    )


_GARBAGE = st.recursive(st.sampled_from([*_TRICKY[:12], None, 1, True]), _values, max_leaves=6)


def _tweak_string(value: str, draw: Any) -> Any:
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return value + draw(st.sampled_from([" ", "\n", "\t", "\x0b", "\u00a0"]))
    if kind == 1:
        return draw(st.sampled_from([" ", "\n", "\u2003"])) + value
    if kind == 2 and value:
        index = draw(st.integers(0, len(value) - 1))
        return value[:index] + draw(st.characters()) + value[index + 1 :]
    if kind == 3 and value:
        index = draw(st.integers(0, len(value) - 1))
        return value[:index] + value[index + 1 :]
    if kind == 4:
        digits = [i for i, c in enumerate(value) if c.isdigit()]
        if digits:
            index = draw(st.sampled_from(digits))
            return value[:index] + str(draw(st.integers(0, 9))) + value[index + 1 :]
    if kind == 5:
        return value.replace(" ", "  ") + draw(st.text(max_size=3))
    if kind == 6:
        return value * 70
    return draw(st.text(max_size=12))


def _tweak_number(value: float, draw: Any) -> Any:
    return draw(
        st.sampled_from(
            [bool(value), float(value), str(value), -value, value + 2**31, value - 2**31, [value]]
        )
    )


@st.composite
def _mutation(draw: Any, base: dict[str, Any]) -> dict[str, Any]:
    resource = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = json_paths(resource)
        dicts = [()] + [p for p in paths if isinstance(_node(resource, p), dict)]
        kind = draw(st.sampled_from(["replace", "delete", "add", "choice", "tweak", "unwrap"]))
        if kind in ("replace", "delete") and paths:
            path = draw(st.sampled_from(paths))
            parent = _node(resource, path[:-1])
            if kind == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(_GARBAGE)
        elif kind == "add":
            target = _node(resource, draw(st.sampled_from(dicts)))
            target[draw(st.sampled_from(_NAMES))] = draw(_GARBAGE)
        elif kind == "choice":
            target = _node(resource, draw(st.sampled_from(dicts)))
            chosen = [k for k in target if k.startswith(_CHOICE_PREFIXES)] if target else []
            if chosen:
                key = draw(st.sampled_from(chosen))
                prefix = next(p for p in _CHOICE_PREFIXES if key.startswith(p))
                sibling = prefix + draw(st.sampled_from(_CHOICE_TYPES))
                target[sibling] = draw(
                    st.sampled_from(["x", True, 3, "2020-01-01", {"text": "x"}, {"value": 1}])
                )
        elif kind == "tweak" and paths:
            path = draw(st.sampled_from(paths))
            parent = _node(resource, path[:-1])
            value = parent[path[-1]]
            if isinstance(value, str):
                parent[path[-1]] = _tweak_string(value, draw)
            elif isinstance(value, int | float):
                parent[path[-1]] = _tweak_number(value, draw)
        elif kind == "unwrap":
            lists = [p for p in paths if isinstance(_node(resource, p), list)]
            if lists:
                path = draw(st.sampled_from(lists))
                parent = _node(resource, path[:-1])
                value = parent[path[-1]]
                parent[path[-1]] = draw(st.sampled_from([value[0] if value else None, [value]]))
    return resource


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutations_never_make_the_fast_path_accept_what_the_model_rejects(
    bases: list[dict[str, Any]], generated: list[dict[str, Any]], data: st.DataObject
) -> None:
    base = data.draw(st.sampled_from(bases + generated[:200:7]))
    resource = data.draw(_mutation(base))
    fast = _assert_implication(resource, _model(base))
    event(f"fast path {'accepted' if fast else 'declined'}")


def test_prepare_compiles_the_checks_of_the_named_types_before_their_first_use() -> None:
    from fhir.resources.R4B.immunization import Immunization

    from fhirsync.service import fastcheck, validation

    validation.prepare(["Immunization"])
    assert Immunization in fastcheck._CHECKS
