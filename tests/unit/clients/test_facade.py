"""Client choice (spec §5.2, deterministic), uuid extraction (§5.3) and sub-resource owners."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from fhirsync import categories
from fhirsync.categories import Category
from fhirsync.clients.base import FetchResult, OutgoingChange, RecordRef, SendResult
from fhirsync.clients.facade import ClientFacade, extract_uuid, owner_ref
from fhirsync.errors import UnknownResourceType

U1 = "1f45a2c4-7b0e-4b4e-9a51-0c8f1d2e3a4b"
U2 = "9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f"


class _Fake:
    def __init__(self, name: str, fhir_only: bool = False, rest_only: bool = False) -> None:
        self.name = name
        self._fhir_only, self._rest_only = fhir_only, rest_only
        self.closed = False

    def supports(self, category: Category) -> bool:
        if self._fhir_only:
            return category.is_fhir
        if self._rest_only:
            return category.rest_resource is not None
        return True

    def fetch(self, category: Category, refs: Sequence[RecordRef]) -> FetchResult:
        return FetchResult()

    def send(self, category: Category, changes: Sequence[OutgoingChange]) -> SendResult:
        return SendResult()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def facade() -> ClientFacade:
    clients = {
        "fhir": _Fake("fhir", fhir_only=True),
        "rest": _Fake("rest", rest_only=True),
        "custom": _Fake("custom"),
    }
    return ClientFacade(clients, "fhir")


PATIENT = categories.get("patient")
VISITTYPE = categories.get("visittype")
LINKS = {"rest": f"/ws/rest/v1/patient/{U1}?v=full", "fhir": f"/ws/fhir/Patient/{U1}"}


def test_class_preference_wins_when_the_client_supports_the_category(
    facade: ClientFacade,
) -> None:
    assert facade.choice(PATIENT, LINKS, "custom") == (facade.clients["custom"], "preferred")


def test_global_preference_is_next(facade: ClientFacade) -> None:
    assert facade.choice(PATIENT, LINKS, None) == (facade.clients["fhir"], "global")
    # rest cannot carry a FHIR-stored patient here: fall back to the global preference
    assert facade.choose(PATIENT, LINKS, "rest") is facade.clients["fhir"]


def test_then_a_link_the_entry_has_then_any_supporting_client(facade: ClientFacade) -> None:
    rest_links = {"rest": f"/ws/rest/v1/visittype/{U1}?v=full"}
    assert facade.choice(VISITTYPE, rest_links, None) == (facade.clients["rest"], "link")
    only_fhir = ClientFacade({"fhir": _Fake("fhir", fhir_only=True), "x": _Fake("x")}, "fhir")
    assert only_fhir.choice(VISITTYPE, {}, None) == (only_fhir.clients["x"], "any")


def test_choice_is_deterministic_whatever_the_link_order(facade: ClientFacade) -> None:
    a = {"rest": "/ws/rest/v1/visittype/x", "custom": "/c/x"}
    b = {"custom": "/c/x", "rest": "/ws/rest/v1/visittype/x"}
    facade.global_preferred = "nothing"
    assert facade.choose(VISITTYPE, a) is facade.choose(VISITTYPE, b)


def test_no_supporting_client_is_an_unknown_resource_type() -> None:
    facade = ClientFacade({"fhir": _Fake("fhir", fhir_only=True)}, "fhir")
    with pytest.raises(UnknownResourceType):
        facade.choose(VISITTYPE, {"rest": "/ws/rest/v1/visittype/x"})


def test_close_closes_every_client(facade: ClientFacade) -> None:
    closed: list[bool] = []
    facade._on_close.append(lambda: closed.append(True))
    facade.close()
    assert all(c.closed for c in facade.clients.values())  # type: ignore[attr-defined]
    assert closed == [True]


@pytest.mark.parametrize(
    ("category", "links", "expected"),
    [
        ("patient", {"fhir": f"/ws/fhir2/R4/Patient/{U1}"}, U1),
        ("patient", {"fhir": f"/ws/fhir/Patient/{U1}"}, U1),  # old Java STU3 link
        ("patient", {"rest": f"/ws/rest/v1/patient/{U1}?v=full"}, U1),
        ("visittype", {"rest": f"/ws/rest/v1/visittype/{U1}?v=full"}, U1),
        # template based: not a hex uuid (OpenMRS concept uuids look like this)
        (
            "concept",
            {"rest": "/ws/rest/v1/concept/5089AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA?v=full"},
            "5089AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        ("person_name", {"rest": f"/ws/rest/v1/person/{U1}/name/{U2}?v=full"}, U2),
        # fallback: the LAST uuid of an unknown link shape
        ("patient", {"other": f"/x/{U1}/y/{U2}/z"}, U2),
        ("patient", {"fhir": "/ws/fhir2/R4/Patient/"}, None),
        ("patient", {}, None),
    ],
)
def test_extract_uuid(category: str, links: dict[str, str], expected: str | None) -> None:
    assert extract_uuid(categories.get(category), links) == expected


def test_absolute_links_are_read_by_their_path() -> None:
    links = {"rest": f"http://elsewhere:8081/ws/rest/v1/visittype/{U1}?v=full"}
    assert extract_uuid(VISITTYPE, links) == U1


@pytest.mark.parametrize(
    ("category", "path", "owner"),
    [
        ("person_name", "person/{p}/name/{c}", "person"),
        ("person_address", "person/{p}/address/{c}", "person"),
        ("person_attribute", "person/{p}/attribute/{c}", "person"),
        ("patient_identifier", "patient/{p}/identifier/{c}", "patient"),
    ],
)
def test_owner_ref_of_sub_resources(category: str, path: str, owner: str) -> None:
    link = "/ws/rest/v1/" + path.format(p=U1, c=U2) + "?v=full"
    assert owner_ref(categories.get(category), {"rest": link}) == (categories.get(owner), U1)


def test_owner_ref_of_an_ordinary_category_is_none() -> None:
    assert owner_ref(PATIENT, LINKS) is None
    assert owner_ref(categories.get("person_name"), {"rest": "/nothing/here"}) is None
