"""markers.last_entry_id and failures.entry_id: text, as long as the parent's entry ids

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 20:00:00

An Atom entry id is whatever the parent's feed says. PostgreSQL refused one over 255 characters,
which failed the commit of its whole page: the marker could never pass that entry. SQLite never
enforced the length, so its tables are left as they are (changing a column's type there copies
the whole table).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = (("markers", "last_entry_id", True), ("failures", "entry_id", False))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, nullable in _COLUMNS:
        op.alter_column(
            table, column, type_=sa.Text(), existing_type=sa.String(255), existing_nullable=nullable
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, nullable in _COLUMNS:
        op.alter_column(
            table, column, type_=sa.String(255), existing_type=sa.Text(), existing_nullable=nullable
        )
