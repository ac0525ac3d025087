"""conflicts: agreed (base) versions and stored merge conflicts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agreed",
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("uuid", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("parent_version", sa.String(length=64), nullable=True),
        sa.Column("pending_push", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("category", "uuid"),
    )
    op.create_index("ix_agreed_pending", "agreed", ["pending_push", "category"], unique=False)
    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=38), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("record_uuid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("operation", sa.String(length=8), nullable=False),
        sa.Column("base_body", sa.LargeBinary(), nullable=True),
        sa.Column("base_state", sa.String(length=16), nullable=True),
        sa.Column("local_body", sa.LargeBinary(), nullable=False),
        sa.Column("local_state", sa.String(length=16), nullable=False),
        sa.Column("remote_body", sa.LargeBinary(), nullable=False),
        sa.Column("remote_state", sa.String(length=16), nullable=False),
        sa.Column("remote_version", sa.String(length=64), nullable=True),
        sa.Column("paths", sa.Text(), nullable=False),
        sa.Column("detected_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("resolved_by", sa.String(length=255), nullable=True),
        sa.Column("resolution", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uuid"),
    )
    op.create_index(
        "ix_conflicts_record", "conflicts", ["category", "record_uuid", "status"], unique=False
    )
    op.create_index("ix_conflicts_status", "conflicts", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_conflicts_status", table_name="conflicts")
    op.drop_index("ix_conflicts_record", table_name="conflicts")
    op.drop_table("conflicts")
    op.drop_index("ix_agreed_pending", table_name="agreed")
    op.drop_table("agreed")
