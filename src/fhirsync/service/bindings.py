"""The required bindings of FHIR R4 that fhir.resources does not check, as tables of paths.

The models accept any string where a ``code`` of a required binding stands (``gender: "femme"``
passes them); these tables list, per resource type, the paths of such codes and the value set each
must come from. :mod:`fhirsync.service.codes` checks a resource against them.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CODE_RULES", "CONCEPT_RULES", "IDENTIFIER_RULES", "CodeRule", "ConceptRule", "Path"]

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

Path = tuple[str, ...]
# A code rule: the path of a ``code`` element, or of a CodeableConcept whose codings from
# ``system`` must come from the value set (codings of other systems are translations; allowed).
CodeRule = tuple[Path, frozenset[str]]
ConceptRule = tuple[Path, str, frozenset[str]]


def _datatype(prefix: Path, rules: Mapping[str, frozenset[str]]) -> list[CodeRule]:
    return [((*prefix, name), codes) for name, codes in rules.items()]


def _person_like(*, contact: bool = False) -> list[CodeRule]:
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


CODE_RULES: Mapping[str, list[CodeRule]] = {
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

CONCEPT_RULES: Mapping[str, list[ConceptRule]] = {
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

# Every resource with an ``identifier`` has Identifier there; the person-like types and Location
# list their HumanName/ContactPoint/Address paths in CODE_RULES already.
IDENTIFIER_RULES: tuple[CodeRule, ...] = tuple(_datatype(("identifier",), _IDENTIFIER))
