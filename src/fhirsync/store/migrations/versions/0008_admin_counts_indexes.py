"""audit: indexes for what each creator reported and the failures still to handle; failures by
their audit row

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 02:00:00

- ``ix_audit_creator_time``: the Children page shows when each child last reported a message.
  It asked the audit log once per child, each a read of every row: 13.8 s for 300 children
  and 500,000 rows. With the index, each child's newest message is one look-up.
- ``ix_audit_open_failures``: the failed messages still to handle (not retried since, not a
  dismissal, not a conflict, not voided), by creator and category. The dashboard and the
  Children page count these; the partial index holds only them, so a count reads only them.
- ``ix_failures_audit_uuid``: the audit page asks, per row shown, the status of the failure it
  reported; a broken category can park tens of thousands of failures, all read per question.
- ``ix_events_from_children``: the Children page counts each child's changes and finds its
  newest; that read every event (about a second for two million). Partial, as 0006's index of
  records: only the changes received from children are in it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_FROM_CHILDREN = sa.text("substr(via, 1, 6) = 'child:'")
# The very text of store.tables.OPEN_FAILURE: a query must repeat it for the index to serve it.
_OPEN_FAILURE = sa.text(
    "NOT success AND NOT voided AND next_message_uuid IS NULL AND merge_conflict_uuid IS NULL "
    "AND coalesce(error_class, '') <> 'Dismissed'"
)


def upgrade() -> None:
    op.create_index(
        "ix_audit_creator_time", "audit", ["creator_instance_id", "voided", "timestamp"]
    )
    op.create_index(
        "ix_audit_open_failures",
        "audit",
        ["creator_instance_id", "resource_name"],
        sqlite_where=_OPEN_FAILURE,
        postgresql_where=_OPEN_FAILURE,
    )
    op.create_index("ix_failures_audit_uuid", "failures", ["audit_uuid"])
    op.create_index(
        "ix_events_from_children",
        "events",
        ["via", "timestamp"],
        sqlite_where=_FROM_CHILDREN,
        postgresql_where=_FROM_CHILDREN,
    )


def downgrade() -> None:
    op.drop_index("ix_events_from_children", table_name="events")
    op.drop_index("ix_failures_audit_uuid", table_name="failures")
    op.drop_index("ix_audit_open_failures", table_name="audit")
    op.drop_index("ix_audit_creator_time", table_name="audit")
