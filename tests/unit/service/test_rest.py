"""The REST v1 service: stored form, validation, representations and the write operations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fhirsync import canonical
from fhirsync import categories as cats
from fhirsync.errors import (
    Forbidden,
    InvalidResource,
    RecordNotFound,
    RequestError,
    UnknownResourceType,
)
from fhirsync.records import Record
from fhirsync.service import rest, rest_body, rest_render
from fhirsync.store import events, records
from fhirsync.store.engine import open_database
from fhirsync.store.users import User

CONCEPT = cats.get("concept")
RELATIONSHIP = cats.get("relationship")
USER = cats.get("user")
BASE = "http://node:8080"


def _record(category: str, body: dict[str, Any], state: str = "active") -> Record:
    return Record(
        category=category,
        uuid=str(body["uuid"]),
        body=canonical.dumps(body),
        version=1,
        content_hash=canonical.content_hash(body),
        last_updated=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        state=state,  # type: ignore[arg-type]
        origin="n1",
    )


def test_exactly_the_rest_categories_are_served() -> None:
    served = {c.rest_resource for c in cats.all_categories() if c.rest_resource}
    assert served == {
        "concept",
        "visittype",
        "form",
        "privilege",
        "program",
        "relationship",
        "drug",
        "user",
    }
    with pytest.raises(UnknownResourceType):
        rest.category_for("patient")
    assert rest.category_for("VisitType").name == "visittype"


def test_split_removes_bookkeeping_and_state_and_flattens_references() -> None:
    body, state = rest_body.split_representation(
        RELATIONSHIP,
        {
            "uuid": "r1",
            "personA": {"uuid": "a", "display": "Alice", "links": []},
            "personB": "b",
            "relationshipType": {"uuid": "t"},
            "voided": True,
            "display": "Alice is mother of Bob",
            "links": [{"rel": "self", "uri": "."}],
            "auditInfo": {"dateChanged": "2018-11-26"},
            "endDate": None,
        },
    )
    assert body == {"uuid": "r1", "personA": "a", "personB": "b", "relationshipType": "t"}
    assert state == "voided"


def test_split_maps_the_state_field_of_the_category() -> None:
    assert rest_body.split_representation(CONCEPT, {"retired": False})[1] == "active"
    assert rest_body.split_representation(CONCEPT, {"retired": True})[1] == "retired"
    assert rest_body.split_representation(CONCEPT, {"name": "x"})[1] is None
    # ``voided`` is not a concept's state field: it stays data.
    assert rest_body.split_representation(CONCEPT, {"voided": True}) == ({"voided": True}, None)
    with pytest.raises(InvalidResource) as info:
        rest_body.split_representation(CONCEPT, {"retired": "yes"})
    assert info.value.element == "retired"


def test_expected_simple_object_sample_loses_its_bookkeeping(reference_dir: Any) -> None:
    sample = canonical.loads(
        (reference_dir / "openmrs/sync2/expectedSimpleObject.json").read_bytes()
    )
    body, _ = rest_body.split_representation(cats.get("privilege"), sample)
    assert body == {"VALUE_KEY": "Test value"}


def test_user_secrets_are_refused_by_name_without_their_values() -> None:
    with pytest.raises(InvalidResource) as info:
        rest_body.split_representation(
            USER, {"username": "u", "secretQuestion": "pet?", "password": "pw-123456"}
        )
    assert info.value.element == "password"
    assert "password" in info.value.message
    assert "secretQuestion" in info.value.message
    assert "pw-123456" not in info.value.message
    assert "pet?" not in info.value.message


def test_form_drops_the_spec_5_8_fields() -> None:
    body, _ = rest_body.split_representation(
        cats.get("form"), {"name": "F", "version": "1", "formFields": [], "resources": []}
    )
    assert body == {"name": "F", "version": "1"}


@pytest.mark.parametrize(
    ("resource", "body", "element"),
    [
        ("concept", {}, "name"),
        ("concept", {"name": {"locale": "en"}}, "name"),
        ("concept", {"names": "Weight"}, "names"),
        ("form", {"version": "1"}, "name"),
        ("form", {"name": "F", "version": 1}, "version"),
        ("user", {"username": ""}, "username"),
        ("relationship", {"personA": "a", "personB": "b"}, "relationshipType"),
    ],
)
def test_validate_names_the_field(resource: str, body: dict[str, Any], element: str) -> None:
    with pytest.raises(InvalidResource) as info:
        rest_body.validate(rest.category_for(resource), body)
    assert info.value.element == element


def test_validate_accepts_minimal_bodies() -> None:
    rest_body.validate(CONCEPT, {"name": "Weight"})
    rest_body.validate(CONCEPT, {"names": [{"name": "Weight", "locale": "en"}, "Poids"]})
    rest_body.validate(USER, {"systemId": "admin-2"})
    rest_body.validate(cats.get("form"), {"name": "F", "version": "1.0"})


def test_display_picks_a_name_like_field() -> None:
    assert (
        rest_render.display(CONCEPT, {"names": [{"locale": "en"}, {"name": "Weight"}]}) == "Weight"
    )
    assert rest_render.display(CONCEPT, {"name": {"display": "Height"}}) == "Height"
    assert rest_render.display(USER, {"systemId": "3-4"}) == "3-4"
    assert rest_render.display(USER, {"username": "nurse", "systemId": "3-4"}) == "nurse"
    shown = rest_render.display(
        RELATIONSHIP, {"personA": "a", "relationshipType": "t", "personB": "b"}
    )
    assert shown == "a t b"
    assert rest_render.display(cats.get("drug"), {"uuid": "d1"}) == "d1"


def test_representation_adds_state_display_and_links() -> None:
    rec = _record("concept", {"uuid": "c1", "name": "Weight"}, state="retired")
    full = rest_render.representation(CONCEPT, rec, "full", BASE)
    assert full == {
        "uuid": "c1",
        "name": "Weight",
        "display": "Weight",
        "retired": True,
        "auditInfo": {"dateChanged": "2026-01-02T03:04:05.678+0000"},
        "links": [{"rel": "self", "uri": f"{BASE}/ws/rest/v1/concept/c1"}],
    }
    default = rest_render.representation(CONCEPT, rec, "default", BASE)
    assert "auditInfo" not in default
    assert default["links"][1] == {"rel": "full", "uri": f"{BASE}/ws/rest/v1/concept/c1?v=full"}
    assert rest_render.representation(CONCEPT, rec, "ref", BASE) == {
        "uuid": "c1",
        "display": "Weight",
        "links": [{"rel": "self", "uri": f"{BASE}/ws/rest/v1/concept/c1"}],
    }
    voided = rest_render.representation(
        RELATIONSHIP, _record("relationship", {"uuid": "r"}), "full", BASE
    )
    assert voided["voided"] is False
    assert "retired" not in voided


def test_parse_view_and_body() -> None:
    assert rest.parse_view(None, "ref") == "ref"
    assert rest.parse_view("FULL", "ref") == "full"
    with pytest.raises(InvalidResource):
        rest.parse_view("custom:(uuid)", "ref")
    assert rest.parse_body(b'{"name": "x"}') == {"name": "x"}
    for raw in (b"", b"[]", b'"x"', b"{bad"):
        with pytest.raises(InvalidResource):
            rest.parse_body(raw)


def test_author_follows_the_account() -> None:
    admin = User("admin", "admin", None)
    child = User("clinic-b", "child", "clinic-b")
    assert rest.author_for(admin, "hub", "ignored") == rest.Author("hub", None)
    assert rest.author_for(child, "hub", None) == rest.Author("clinic-b", "child:clinic-b")
    assert rest.author_for(child, "hub", "clinic-c") == rest.Author("clinic-c", "child:clinic-b")
    with pytest.raises(RequestError):
        rest.author_for(child, "hub", "not an id")
    with pytest.raises(Forbidden):
        rest.author_for(User("v", "viewer", None), "hub", None)


def test_operations_on_a_real_database(db_url: str) -> None:
    db = open_database(db_url)
    author = rest.Author("n1")
    try:
        rep, created = rest.create(db, CONCEPT, {"uuid": "c1", "name": "Weight"}, author, BASE)
        assert created
        assert rep["uuid"] == "c1"
        rep = rest.update(
            db,
            CONCEPT,
            "c1",
            {"version": "2", "name": None, "names": ["W"]},
            author=author,
            base_url=BASE,
        )
        assert "name" not in rep
        assert rep["names"] == ["W"]
        with pytest.raises(InvalidResource):
            rest.update(db, CONCEPT, "c1", {"names": None}, author=author, base_url=BASE)
        rest.delete(db, CONCEPT, "c1", author, purge=False)
        rest.delete(db, CONCEPT, "c1", author, purge=False)  # already retired: no new event
        assert rest.read(db, CONCEPT, "c1", "ref", BASE)["display"] == "W"
        rest.delete(db, CONCEPT, "c1", author, purge=True)
        with pytest.raises(RecordNotFound):
            rest.read(db, CONCEPT, "c1", "full", BASE)
        with pytest.raises(RecordNotFound):
            rest.update(db, CONCEPT, "c1", {"version": "3"}, author=author, base_url=BASE)
        with db.read() as conn:
            actions = [e.action for e in events.between(conn, "concept", 1, 100)]
            assert records.get(conn, "concept", "c1") is not None  # purged, history kept
        assert actions == ["CREATED", "UPDATED", "RETIRED", "DELETED"]
    finally:
        db.dispose()
