"""Opening a database: a new or outdated one is migrated; one at the newest revision skips Alembic."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid as uuidlib
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from fhirsync.errors import ConfigurationError
from fhirsync.store import failures
from fhirsync.store.engine import HEAD_REVISION, alembic_config, open_database
from fhirsync.store.tables import conflicts
from fhirsync.testing import postgres
from fhirsync.testing.servers import free_port


def _undo_0008(conn: Connection) -> None:
    """Remove what migration 0008 made, for a test that sets the revision back."""
    conn.execute(text("DROP INDEX ix_audit_creator_time"))
    conn.execute(text("DROP INDEX ix_audit_open_failures"))
    conn.execute(text("DROP INDEX ix_failures_audit_uuid"))
    conn.execute(text("DROP INDEX ix_events_from_children"))


def _undo_0007_and_later(conn: Connection) -> None:
    """Remove what migrations 0007 and 0008 made, for a test that sets the revision back."""
    _undo_0008(conn)
    conn.execute(text("DROP TABLE revoked_sessions"))
    conn.execute(text("DROP INDEX ix_audit_record_uuid"))
    conn.execute(text("DROP INDEX ix_audit_next_message_uuid"))
    conn.execute(text("ALTER TABLE failures DROP COLUMN origin"))


def _undo_0006_and_later(conn: Connection) -> None:
    """Remove what migrations 0006 to 0008 made, for a test that sets the revision back."""
    _undo_0007_and_later(conn)
    conn.execute(text("DROP INDEX ix_records_from_children"))


def test_head_revision_names_the_newest_migration(db_url: str) -> None:
    heads = ScriptDirectory.from_config(alembic_config(db_url)).get_heads()
    assert heads == [HEAD_REVISION], "a new migration: update store.engine.HEAD_REVISION"


@pytest.mark.postgres
def test_an_outdated_database_is_migrated(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
        _undo_0006_and_later(conn)
        conn.execute(text("DROP TABLE conflicts"))
        conn.execute(text("DROP TABLE agreed"))
    db.dispose()
    again = open_database(db_url)
    try:
        with again.read() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                HEAD_REVISION
            )
            assert conn.execute(text("SELECT count(*) FROM conflicts")).scalar() == 0
    finally:
        again.dispose()


@pytest.mark.postgres
def test_failures_of_a_database_before_0007_are_kept_without_an_origin(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0006'"))
        _undo_0007_and_later(conn)
        moment = datetime(2026, 11, 29, 12, 0)
        conn.execute(
            text(
                "INSERT INTO failures (operation, marker_key, category, record_uuid, entry_id, "
                "action, links, error_class, error_message, attempts, status, first_failed_at, "
                "last_failed_at) VALUES ('PULL', 'k', 'patient', 'p-1', 'e-1', 'UPDATED', '{}', "
                "'InvalidResource', 'bad', 1, 'retrying', :t, :t)"
            ),
            {"t": moment},
        )
    db.dispose()
    again = open_database(db_url)
    try:
        with again.read() as conn:
            [kept] = failures.list_open(conn)
            assert (kept.record_uuid, kept.origin) == ("p-1", None)
            assert conn.execute(text("SELECT count(*) FROM revoked_sessions")).scalar() == 0
    finally:
        again.dispose()


@pytest.mark.postgres
def test_a_database_before_0008_gets_its_indexes(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0007'"))
        _undo_0008(conn)
    db.dispose()
    again = open_database(db_url)
    try:
        made = {
            name
            for table in ("audit", "failures", "events")
            for name in (i["name"] for i in inspect(again.engine).get_indexes(table))
        }
        assert {
            "ix_audit_creator_time",
            "ix_audit_open_failures",
            "ix_failures_audit_uuid",
            "ix_events_from_children",
        } <= made
    finally:
        again.dispose()


def test_a_database_at_the_newest_revision_is_opened_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    open_database(url).dispose()
    probe = (
        "import sys\n"
        "from fhirsync.store.engine import open_database\n"
        f"open_database({url!r}).dispose()\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _conflict(conn: Connection, uuid: str, record_uuid: str, status: str) -> None:
    moment = datetime(2026, 11, 29, 12, 0)
    body, state = b"{}", "CREATED"
    conn.execute(
        insert(conflicts).values(
            uuid=uuid, category="patient", record_uuid=record_uuid, status=status,
            operation="pull", local_body=body, local_state=state, remote_body=body,
            remote_state=state, paths="[]", detected_at=moment, updated_at=moment,
        )
    )  # fmt: skip


@pytest.mark.postgres
def test_a_record_has_at_most_one_open_conflict_and_older_duplicates_are_superseded(
    db_url: str,
) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        # A database from before migration 0004, holding two open conflicts for one record.
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
        conn.execute(text("DROP INDEX ux_conflicts_open_record"))
        _undo_0006_and_later(conn)
        _conflict(conn, "c-old", "rec-a", "open")
        _conflict(conn, "c-new", "rec-a", "open")
        _conflict(conn, "c-done", "rec-b", "resolved")
        _conflict(conn, "c-b", "rec-b", "open")
    db.dispose()
    again = open_database(db_url)
    try:
        with again.read() as conn:
            rows = {
                r.uuid: (r.status, r.resolution, r.resolved_by)
                for r in conn.execute(select(conflicts))
            }
        assert rows == {
            "c-old": ("resolved", "superseded", "migration 0004"),
            "c-new": ("open", None, None),
            "c-done": ("resolved", None, None),
            "c-b": ("open", None, None),
        }
        with pytest.raises(IntegrityError), again.write() as conn:
            _conflict(conn, "c-third", "rec-a", "open")
        with again.write() as conn:  # closed ones may pile up; another record is its own
            _conflict(conn, "c-closed", "rec-a", "resolved")
            _conflict(conn, "c-other", "rec-c", "open")
    finally:
        again.dispose()


@pytest.mark.postgres
def test_a_database_from_a_newer_fhirsync_is_refused_and_left_unchanged(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    db.dispose()
    with pytest.raises(ConfigurationError) as info:
        open_database(db_url)
    assert info.value.field == "db_url"
    assert "0099" in str(info.value) and "newer fhirsync" in str(info.value)
    check = open_database(db_url, migrate_first=False)
    try:
        with check.read() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0099"
    finally:
        check.dispose()


def test_an_unreachable_database_is_named_without_its_password() -> None:
    url = f"postgresql+psycopg://postgres:Hunter2-pw@127.0.0.1:{free_port()}/test"
    with pytest.raises(ConfigurationError) as info:
        open_database(url)
    assert info.value.field == "db_url"
    assert "Hunter2" not in str(info.value) and "postgres:***@127.0.0.1" in str(info.value)


@pytest.mark.postgres
def test_processes_opening_an_outdated_database_at_once_all_succeed(db_url: str) -> None:
    """serve restarting after an upgrade while a cron pull starts: one migrates, the others
    wait and find the schema current (without the lock, one failed on a table the other had
    just made). A database never opened is the widest window: every migration is to run."""
    start = time.time() + 2.0  # every process starts migrating at the same moment
    probe = (
        "import sys, time\n"
        "from fhirsync.store.engine import open_database\n"
        f"time.sleep(max(0.0, {start!r} - time.time()))\n"
        f"open_database({db_url!r}).dispose()\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", probe], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], errors
    again = open_database(db_url)
    try:
        with again.read() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        again.dispose()
    assert version == HEAD_REVISION


@pytest.mark.postgres
def test_a_role_without_the_right_to_create_tables_is_told_so(db_url: str) -> None:
    # PostgreSQL 15 lets only the owner create tables in a new database's public schema. The
    # error quoted the failed CREATE TABLE over three lines and advised restoring "a copy made
    # by 'fhirsync backup'", which cannot copy a PostgreSQL node.
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL roles (FHIRSYNC_TEST_DB=postgresql checks this)")
    role = f"fhirsync_r_{uuidlib.uuid4().hex[:10]}"
    with psycopg.connect(postgres.ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        with pytest.raises(ConfigurationError) as info:
            open_database(db_url.replace("//postgres@", f"//{role}@"))
        message = str(info.value)
        assert info.value.field == "db_url"
        assert len(message.splitlines()) == 1, message
        assert "permission denied" in message and role in message and "owns the database" in message
        assert "fhirsync backup" not in message
    finally:
        postgres.drop_database(db_url)  # its sessions closed, so the role can go
        with psycopg.connect(postgres.ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP ROLE "{role}"')
