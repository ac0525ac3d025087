"""Basic authentication: argon2-hashed users, no hint whether a user exists."""

from __future__ import annotations

import base64

import pytest

from fhirsync.errors import ConfigurationError, Forbidden, Unauthenticated
from fhirsync.server.auth import RECHECK_SECONDS, Authenticator, require_role
from fhirsync.store import users
from fhirsync.store.engine import Database, open_database
from fhirsync.store.tables import users as users_table

pytestmark = pytest.mark.postgres


def _store_hash(db: Database, name: str, password_hash: str) -> None:
    """Put ``password_hash`` in ``name``'s row directly (as another fhirsync version wrote it)."""
    with db.write() as conn:
        conn.execute(
            users_table.update()
            .where(users_table.c.name == name)
            .values(password_hash=password_hash)
        )


def _stored_hash(db: Database, name: str) -> str:
    with db.read() as conn:
        row = conn.execute(users_table.select().where(users_table.c.name == name)).one()
    return str(row.password_hash)


def _header(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def test_passwords_are_stored_hashed_and_verified(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        users.add(conn, "alice", "correct-horse", "admin")
    with db.read() as conn:
        stored = conn.execute(users_table.select()).one().password_hash
    assert "correct-horse" not in stored
    assert stored.startswith("$argon2")
    auth = Authenticator(db)
    assert auth.authenticate_header(_header("alice", "correct-horse")).role == "admin"
    db.dispose()


def test_new_hashes_use_the_owasp_parameters_and_old_ones_still_verify(db_url: str) -> None:
    from argon2 import PasswordHasher, extract_parameters

    db = open_database(db_url)
    with db.write() as conn:
        users.add(conn, "alice", "correct-horse", "admin")
        users.add(conn, "bob", "battery-staple", "child", "bob-node")
    # An account hashed under argon2-cffi's default parameters (before the change).
    _store_hash(db, "bob", PasswordHasher().hash("battery-staple"))
    with db.read() as conn:
        rows = {r.name: r.password_hash for r in conn.execute(users_table.select())}
    params = extract_parameters(rows["alice"])
    assert (params.type.name, params.memory_cost, params.time_cost, params.parallelism) == (
        "ID",
        19 * 1024,
        2,
        1,
    )
    assert extract_parameters(rows["bob"]).memory_cost == 65536
    with db.read() as conn:
        verified = users.verify(conn, "bob", "battery-staple")
        assert verified is not None and verified.outdated and verified.password_hash == rows["bob"]
        assert users.verify(conn, "bob", "wrong-staple") is None
        fresh = users.verify(conn, "alice", "correct-horse")
        assert fresh is not None and not fresh.outdated
    db.dispose()


def test_an_old_hash_is_upgraded_on_the_next_successful_login(db_url: str) -> None:
    from argon2 import PasswordHasher, extract_parameters

    db = open_database(db_url)
    with db.write() as conn:
        users.add(conn, "bob", "battery-staple", "child", "bob-node")
    _store_hash(db, "bob", PasswordHasher().hash("battery-staple"))
    old = _stored_hash(db, "bob")
    with pytest.raises(Unauthenticated):
        Authenticator(db).authenticate_header(_header("bob", "wrong-staple"))
    assert _stored_hash(db, "bob") == old  # a wrong password changes nothing
    assert Authenticator(db).authenticate_header(_header("bob", "battery-staple")).name == "bob"
    new = _stored_hash(db, "bob")
    assert new != old and extract_parameters(new).memory_cost == 19 * 1024
    # A fresh process (no remembered credentials) verifies the new hash.
    assert Authenticator(db).authenticate_header(_header("bob", "battery-staple")).name == "bob"
    # A password set after the old hash was verified is never overwritten by the upgrade.
    _store_hash(db, "bob", PasswordHasher().hash("new-password"))
    changed = _stored_hash(db, "bob")
    with db.write() as conn:
        assert users.upgrade_hash(conn, "bob", "battery-staple", old) is None
    assert _stored_hash(db, "bob") == changed
    db.dispose()


def test_unknown_user_and_wrong_password_look_the_same(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        users.add(conn, "alice", "correct-horse", "admin")
    auth = Authenticator(db)
    messages = set()
    for header in (_header("alice", "wrong-password"), _header("mallory", "correct-horse")):
        with pytest.raises(Unauthenticated) as info:
            auth.authenticate_header(header)
        messages.add(str(info.value))
    assert len(messages) == 1
    for bad in (None, "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()):
        with pytest.raises(Unauthenticated):
            auth.authenticate_header(bad)
    db.dispose()


def test_account_rules(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        with pytest.raises(ConfigurationError):
            users.add(conn, "short", "abc", "admin")
        with pytest.raises(ConfigurationError):
            users.add(conn, "kid", "long-enough", "child")
        with pytest.raises(ConfigurationError):
            users.add(conn, "who", "long-enough", "superuser")  # type: ignore[arg-type]
        viewer = users.add(conn, "v", "long-enough", "viewer")
    with pytest.raises(Forbidden):
        require_role(viewer, "admin")
    db.dispose()


def test_a_child_account_is_its_own_usable_instance_id(db_url: str) -> None:
    """The whitelist and the origin of pushed changes are bound to a child's instance id: two
    accounts sharing one could act as each other, one holding the node's own id could pass its
    changes off as the node's, and an unusable id would have every push refused."""
    db = open_database(db_url)
    with db.write() as conn:
        users.add(conn, "clinic-a", "long-enough", "child", "clinic-a", node_instance_id="central")
    for instance_id, why in [
        ("clinic-a", "already belongs to the child account 'clinic-a'"),
        ("central", "this node's own instance id"),
        ("bad id!", "not usable"),
    ]:
        with pytest.raises(ConfigurationError) as info, db.write() as conn:
            users.add(
                conn, "other", "long-enough", "child", instance_id, node_instance_id="central"
            )
        assert info.value.field == "instance_id" and why in str(info.value)
    with db.read() as conn:
        assert [u.name for u in users.list_all(conn)] == ["clinic-a"]
    db.dispose()


def test_an_admin_may_be_removed_while_another_admin_remains(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        users.add(conn, "alice", "correct-horse", "admin")
        users.add(conn, "bob", "battery-staple", "admin")
        assert users.remove(conn, "alice").role == "admin"
        with pytest.raises(ConfigurationError, match="last admin"):
            users.remove(conn, "bob")
        with pytest.raises(ConfigurationError, match="8 characters"):
            users.set_password(conn, "bob", "short")
        with pytest.raises(ConfigurationError, match="no user 'alice'"):
            users.remove(conn, "alice")
        users.set_password(conn, "bob", "new-battery")
    with db.read() as conn:
        assert [u.name for u in users.list_all(conn)] == ["bob"]
        assert users.verify(conn, "bob", "new-battery") is not None
        assert users.verify(conn, "bob", "battery-staple") is None
    db.dispose()


def test_only_verified_credentials_are_remembered(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        users.add(conn, "alice", "correct-horse", "admin")
    auth = Authenticator(db)
    right, wrong = _header("alice", "correct-horse"), _header("alice", "wrong-password")
    assert auth.remembered(right) is None  # never verified: the caller must verify
    assert auth.authenticate_header(right).name == "alice"
    remembered = auth.remembered(right)
    assert remembered is not None and remembered.name == "alice"
    with pytest.raises(Unauthenticated):
        auth.authenticate_header(wrong)
    for header in (wrong, None, "Bearer x", "Basic !!!"):
        assert auth.remembered(header) is None
    db.dispose()


def test_remembered_credentials_follow_the_account(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password change or removal made elsewhere (``fhirsync user``) is seen at the next
    recheck, and an unchanged account is confirmed by reading it, without argon2 again."""
    db = open_database(db_url)
    with db.write() as conn:
        users.add(conn, "alice", "correct-horse", "admin")
        users.add(conn, "carol", "carol-secret", "admin")
    auth = Authenticator(db)
    verifications: list[str] = []
    real_verify = users.verify

    def counting_verify(conn: object, name: str, password: str) -> object:
        verifications.append(name)
        return real_verify(conn, name, password)  # type: ignore[arg-type]

    monkeypatch.setattr(users, "verify", counting_verify)
    monkeypatch.setattr("fhirsync.server.auth.RECHECK_SECONDS", 0.0)  # every call rechecks
    alice, carol = _header("alice", "correct-horse"), _header("carol", "carol-secret")
    for _ in range(3):
        assert auth.authenticate_header(alice).name == "alice"
        assert auth.authenticate_header(carol).name == "carol"
    assert verifications == ["alice", "carol"]  # the later calls only read the accounts

    with db.write() as conn:
        users.set_password(conn, "alice", "battery-staple")
        users.remove(conn, "carol")
    for old in (alice, carol):
        with pytest.raises(Unauthenticated):
            auth.authenticate_header(old)
        assert auth.remembered(old) is None
    assert auth.authenticate_header(_header("alice", "battery-staple")).name == "alice"
    db.dispose()


def test_remembered_credentials_are_trusted_only_between_rechecks(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        users.add(conn, "alice", "correct-horse", "admin")
    auth = Authenticator(db)
    clock = [1000.0]
    monkeypatch.setattr("fhirsync.server.auth.monotonic", lambda: clock[0])
    header = _header("alice", "correct-horse")
    auth.authenticate_header(header)
    clock[0] += RECHECK_SECONDS / 2
    assert auth.remembered(header) is not None
    clock[0] += RECHECK_SECONDS
    assert auth.remembered(header) is None  # the event loop must hand it to a thread now
    assert auth.authenticate_header(header).name == "alice"
    assert auth.remembered(header) is not None
    db.dispose()


def test_a_name_with_a_nul_is_refused_like_any_wrong_name(db_url: str) -> None:
    # PostgreSQL refuses text holding a NUL: looking such a name up raised a DataError, so a
    # Basic header or sign-in form naming "ad\0min" was answered 500 (and the error logged with
    # a traceback) instead of 401. SQLite looked it up and found nobody.
    db = open_database(db_url)
    try:
        with db.write() as conn:
            users.add(conn, "admin", "correct-horse", "admin")
        auth = Authenticator(db)
        with pytest.raises(Unauthenticated):
            auth.authenticate_header(_header("ad\x00min", "correct-horse"))
        with pytest.raises(Unauthenticated):
            auth.authenticate("admin\x00", "correct-horse")
        assert auth.authenticate_header(_header("admin", "correct-horse")).name == "admin"
    finally:
        db.dispose()
