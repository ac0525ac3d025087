"""revoked sessions; an index on audit.record_uuid; the origin of a failed pull entry

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 01:30:00

- ``revoked_sessions``: the nonces of admin-page sessions that were signed out, until the
  session would have expired anyway. A session is a signed cookie; without this a copy of the
  cookie taken before "Sign out" went on working (``server.sessions``).
- ``ix_audit_record_uuid``: the audit page's record filter and a record's history read every
  audit row without it (seconds on a node with millions).
- ``ix_audit_next_message_uuid``: a message's details page names the failed message its retry
  followed up (``previousMessage``), a read of every audit row per page shown. Partial: the
  rows no retry followed (nearly all) are not in it, so writing them costs nothing more.
- ``failures.origin``: the node a failed pull entry named as where the change began. A retry
  rebuilt the entry without it, and the record was labelled as the parent's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FOLLOWED_UP = sa.text("next_message_uuid IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "revoked_sessions",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_index("ix_audit_record_uuid", "audit", ["record_uuid"])
    op.create_index(
        "ix_audit_next_message_uuid",
        "audit",
        ["next_message_uuid"],
        sqlite_where=_FOLLOWED_UP,
        postgresql_where=_FOLLOWED_UP,
    )
    op.add_column("failures", sa.Column("origin", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("failures", schema=None) as batch_op:
        batch_op.drop_column("origin")
    op.drop_index("ix_audit_next_message_uuid", table_name="audit")
    op.drop_index("ix_audit_record_uuid", table_name="audit")
    op.drop_table("revoked_sessions")
