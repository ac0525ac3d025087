"""records: a partial index of the origins received from child accounts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 23:40:00

Every pull run of a node with child accounts asks which origins came up through them (a
grandchild's change relayed by its parent; ``store.children.relaying_origins``). Without an
index that read every record, bodies included: about a second a run for a million records. The
index holds only the rows received from children (``via`` starting "child:"), so the pulled
records a child writes by the thousand add nothing to it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_FROM_CHILDREN = sa.text("substr(via, 1, 6) = 'child:'")


def upgrade() -> None:
    op.create_index(
        "ix_records_from_children",
        "records",
        ["via", "origin"],
        sqlite_where=_FROM_CHILDREN,
        postgresql_where=_FROM_CHILDREN,
    )


def downgrade() -> None:
    op.drop_index("ix_records_from_children", table_name="records")
