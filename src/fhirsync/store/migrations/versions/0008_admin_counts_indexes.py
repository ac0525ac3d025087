"""failures: an index on audit_uuid

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 02:00:00

- ``ix_failures_audit_uuid``: the audit page asks, per row shown, the status of the failure it
  reported; a broken category can park tens of thousands of failures, all read per question.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_failures_audit_uuid", "failures", ["audit_uuid"])


def downgrade() -> None:
    op.drop_index("ix_failures_audit_uuid", table_name="failures")
