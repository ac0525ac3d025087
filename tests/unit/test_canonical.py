"""Canonical JSON and content hashes ignore key order and server bookkeeping."""

from __future__ import annotations

from fhirsync import canonical


def test_hash_ignores_key_order_and_bookkeeping() -> None:
    a = {
        "resourceType": "Patient",
        "gender": "male",
        "id": "x",
        "meta": {"versionId": "3", "lastUpdated": "2020-01-01T00:00:00Z"},
    }
    b = {"gender": "male", "resourceType": "Patient"}
    assert canonical.content_hash(a) == canonical.content_hash(b)


def test_hash_sees_content_and_meta_tags() -> None:
    base = {"resourceType": "Encounter"}
    tagged = {"resourceType": "Encounter", "meta": {"tag": [{"code": "visit"}]}}
    assert canonical.content_hash(base) != canonical.content_hash(tagged)
    assert canonical.content_hash({"a": 1}) != canonical.content_hash({"a": 2})


def test_rest_links_and_audit_info_are_ignored() -> None:
    plain = {"name": "Malaria", "uuid": "u"}
    decorated = {**plain, "links": [{"rel": "self"}], "display": "Malaria", "auditInfo": {}}
    assert canonical.content_hash(plain) == canonical.content_hash(decorated)


def test_dumps_is_compact_and_sorted() -> None:
    assert canonical.dumps({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'


def test_hashes_remembered_reuses_a_body_hash_only_inside_the_block() -> None:
    body = {"resourceType": "Patient", "gender": "male"}
    with canonical.hashes_remembered():
        first = canonical.content_hash(body)
        body["gender"] = "female"  # not allowed inside the block: shows the memo is used
        assert canonical.content_hash(body) == first
        # An equal but distinct object is hashed on its own.
        assert canonical.content_hash(dict(body)) != first
    assert canonical.content_hash(body) != first  # outside: computed afresh
