"""Three-way merge: field-level rules, identity-matched lists, state conflicts, properties."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fhirsync.sync.merge import MISSING, STATE_PATH, Side, flatten, merge


def patient(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "gender": "female",
        "birthDate": "1988-02-14",
        "name": [{"use": "official", "family": "Mensah", "given": ["Ama"]}],
        "telecom": [{"system": "phone", "use": "home", "value": "111"}],
        "identifier": [{"id": "id-1", "system": "openmrs", "value": "100-1"}],
    }
    body.update(extra)
    return body


def test_different_fields_merge() -> None:
    base = patient()
    local = patient(gender="male")
    remote = patient(birthDate="1990-01-01")
    result = merge(Side(base), Side(local), Side(remote))
    assert result.clean
    assert result.body["gender"] == "male" and result.body["birthDate"] == "1990-01-01"
    assert result.from_remote == ("birthDate",)


def test_same_field_changed_differently_is_a_conflict() -> None:
    result = merge(Side(patient()), Side(patient(gender="male")), Side(patient(gender="other")))
    assert not result.clean
    assert result.unresolved == ("gender",)
    assert result.conflicts[0].local == "male" and result.conflicts[0].remote == "other"
    assert result.body["gender"] == "male"  # undecided keeps local


def test_same_change_on_both_sides_is_no_conflict() -> None:
    result = merge(Side(patient()), Side(patient(gender="male")), Side(patient(gender="male")))
    assert result.clean and result.body["gender"] == "male"


def test_lists_are_matched_by_identity_not_position() -> None:
    base = patient()
    local = copy.deepcopy(base)
    local["telecom"].insert(0, {"system": "email", "use": "work", "value": "a@b.c"})
    remote = copy.deepcopy(base)
    remote["name"][0]["family"] = "Owusu"
    remote["telecom"][0]["value"] = "222"
    result = merge(Side(base), Side(local), Side(remote))
    assert result.clean, result.unresolved
    assert result.body["name"][0]["family"] == "Owusu"
    values = {t["system"]: t["value"] for t in result.body["telecom"]}
    assert values == {"email": "a@b.c", "phone": "222"}


def test_same_list_element_changed_differently_conflicts_at_its_path() -> None:
    base = patient()
    local, remote = copy.deepcopy(base), copy.deepcopy(base)
    local["name"][0]["family"] = "Boateng"
    remote["name"][0]["family"] = "Owusu"
    remote["name"][0]["given"] = ["Akua"]
    result = merge(Side(base), Side(local), Side(remote))
    assert result.unresolved == ("name[use=official].family",)
    assert result.body["name"][0]["given"] == ["Akua"]


def test_choices_and_preference_decide() -> None:
    sides = Side(patient()), Side(patient(gender="male")), Side(patient(gender="other"))
    assert merge(*sides, prefer="remote").body["gender"] == "other"
    assert merge(*sides, prefer="local").body["gender"] == "male"
    assert merge(*sides, choices={"gender": "unknown"}).body["gender"] == "unknown"
    removed = merge(*sides, choices={"gender": MISSING})
    assert removed.clean and "gender" not in removed.body


def test_removed_on_one_side_changed_on_the_other_conflicts() -> None:
    base = patient()
    local = {k: v for k, v in base.items() if k != "birthDate"}
    remote = patient(birthDate="1990-01-01")
    result = merge(Side(base), Side(local), Side(remote))
    assert result.unresolved == ("birthDate",)


def test_void_against_edit_is_a_state_conflict() -> None:
    base = patient()
    result = merge(Side(base), Side(base, "voided"), Side(patient(gender="male"), "active"))
    assert result.unresolved == (STATE_PATH,)
    result = merge(Side(base), Side(patient(gender="male")), Side(base, "voided"))
    assert result.unresolved == (STATE_PATH,)


def test_void_alone_merges() -> None:
    base = patient()
    result = merge(Side(base), Side(base), Side(base, "voided"))
    assert result.clean and result.state == "voided"


def test_no_base_every_difference_conflicts() -> None:
    result = merge(None, Side(patient(gender="male")), Side(patient()))
    assert result.unresolved == ("gender",)


def test_flatten_names_paths_like_merge() -> None:
    flat = flatten(patient())
    assert flat["name[use=official].family"] == "Mensah"
    assert flat["telecom[system=phone,use=home].value"] == "111"


# --- properties ------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["a", "b", "c"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3),
    ),
    max_leaves=8,
)
bodies = st.dictionaries(st.sampled_from(["gender", "name", "note", "telecom"]), json_values)


@settings(max_examples=150, deadline=None)
@given(bodies, bodies)
def test_one_sided_changes_win(base: dict[str, Any], changed: dict[str, Any]) -> None:
    assert merge(Side(base), Side(base), Side(changed)).body == changed
    assert merge(Side(base), Side(changed), Side(base)).body == changed
    same = merge(Side(base), Side(changed), Side(changed))
    assert same.clean and same.body == changed


@settings(max_examples=150, deadline=None)
@given(bodies, bodies, bodies)
def test_merge_is_symmetric_in_its_conflicts(
    base: dict[str, Any], local: dict[str, Any], remote: dict[str, Any]
) -> None:
    one = merge(Side(base), Side(local), Side(remote))
    other = merge(Side(base), Side(remote), Side(local))
    assert sorted(one.unresolved) == sorted(other.unresolved)
    if one.clean:
        assert flatten(one.body) == flatten(other.body)
    # A preference always decides everything, and keeps every untouched base field.
    decided = merge(Side(base), Side(local), Side(remote), prefer="remote")
    assert decided.clean
    for key, value in base.items():
        if local.get(key, MISSING) == value and remote.get(key, MISSING) == value:
            assert decided.body.get(key) == value
