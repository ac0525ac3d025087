"""Opening a database: a new or outdated one is migrated; one at the newest revision skips Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from fhirsync.store.engine import HEAD_REVISION, alembic_config, open_database


def test_head_revision_names_the_newest_migration(db_url: str) -> None:
    heads = ScriptDirectory.from_config(alembic_config(db_url)).get_heads()
    assert heads == [HEAD_REVISION], "a new migration: update store.engine.HEAD_REVISION"


@pytest.mark.postgres
def test_an_outdated_database_is_migrated(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
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
