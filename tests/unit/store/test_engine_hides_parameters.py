"""A database error's text never carries the statement's parameters (record bodies, names)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from fhirsync.store.engine import open_database


@pytest.mark.postgres
def test_database_errors_hide_parameters(db_url: str) -> None:
    db = open_database(db_url)
    try:
        with pytest.raises(SQLAlchemyError) as caught, db.write() as conn:
            conn.execute(text("INSERT INTO no_such_table VALUES (:v)"), {"v": "Ama Mensah"})
    finally:
        db.dispose()
    assert "Mensah" not in str(caught.value)
    assert "hidden" in str(caught.value)
