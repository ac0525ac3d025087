"""conflicts: at most one open conflict per record, enforced by a partial unique index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 17:30:00

Until now only the record-row locks of the write paths kept a record to one open conflict. The
index makes that hold for any future path too. Should an older database hold more than one (none
is known), the newest stays open and the others are closed as superseded, kept in the history.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OPEN = sa.text("status = 'open'")


def upgrade() -> None:
    conflicts = sa.table(
        "conflicts",
        sa.column("id", sa.Integer),
        sa.column("category", sa.String),
        sa.column("record_uuid", sa.String),
        sa.column("status", sa.String),
        sa.column("resolved_at", sa.DateTime),
        sa.column("resolved_by", sa.String),
        sa.column("resolution", sa.String),
    )
    newest = (
        sa.select(sa.func.max(conflicts.c.id))
        .where(conflicts.c.status == "open")
        .group_by(conflicts.c.category, conflicts.c.record_uuid)
    )
    op.execute(
        conflicts.update()
        .where(conflicts.c.status == "open", conflicts.c.id.not_in(newest))
        .values(
            status="resolved",
            resolved_at=datetime.now(UTC).replace(tzinfo=None),
            resolved_by="migration 0004",
            resolution="superseded",
        )
    )
    op.create_index(
        "ux_conflicts_open_record",
        "conflicts",
        ["category", "record_uuid"],
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )


def downgrade() -> None:
    op.drop_index("ux_conflicts_open_record", table_name="conflicts")
