"""Accounts the store cannot keep are refused with the field named, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from fhirsync.errors import ConfigurationError
from fhirsync.store import users
from fhirsync.store.engine import open_database


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("name", "role", "instance_id", "field"),
    [
        ("u" * 256, "viewer", None, "name"),
        ("", "viewer", None, "name"),
        ("ops", "admin", "i" * 256, "instance_id"),
        ("clinic", "child", "i" * 65, "instance_id"),
    ],
)
def test_an_account_beyond_the_store_is_refused_naming_the_field(
    db_url: str, name: str, role: users.Role, instance_id: str | None, field: str
) -> None:
    db = open_database(db_url)
    try:
        with pytest.raises(ConfigurationError) as info, db.write() as conn:
            users.add(conn, name, "password-123", role, instance_id)
        assert info.value.field == field
        with db.read() as conn:
            assert [u.name for u in users.list_all(conn)] == []
        with db.write() as conn:  # the longest that fits is kept
            users.add(conn, "u" * 255, "password-123", "viewer")
    finally:
        db.dispose()
