"""SQLAlchemy Core table definitions (the schema Alembic migrations create)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from fhirsync.records import ORIGIN_MAX

metadata = MetaData()

MAX_ROW_ID = 2**31 - 1
"""The largest id an autoincrement key holds on both databases: PostgreSQL makes it INTEGER
(SERIAL, 32 bits) where SQLite's row ids have 64. A larger id, from a URL or a command line, names
no row, and PostgreSQL refuses to even compare one with the column."""

records = Table(
    "records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("category", String(64), nullable=False),
    Column("uuid", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("version", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("last_updated", DateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("origin", String(ORIGIN_MAX), nullable=False),
    Column("via", String(ORIGIN_MAX), nullable=True),
    UniqueConstraint("category", "uuid", name="uq_records_category_uuid"),
)
Index("ix_records_uuid", records.c.uuid)
Index("ix_records_category_last_updated", records.c.category, records.c.last_updated)
FROM_CHILDREN = text("substr(via, 1, 6) = 'child:'")
"""Rows received from a child account (``store.children``). A query must use this very text,
literal included, for the partial index below to serve it (neither database proves it from a
LIKE or a bound parameter); substr and equality compare characters as they are under any
PostgreSQL collation, where a range on ``via`` would not."""
Index(
    "ix_records_from_children",
    records.c.via,
    records.c.origin,
    sqlite_where=FROM_CHILDREN,
    postgresql_where=FROM_CHILDREN,
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("category", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("event_uuid", String(64), nullable=False, unique=True),
    Column("record_uuid", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("timestamp", DateTime, nullable=False),
    Column("origin", String(ORIGIN_MAX), nullable=False),
    Column("via", String(ORIGIN_MAX), nullable=True),
    UniqueConstraint("category", "seq", name="uq_events_category_seq"),
)

feed_counters = Table(
    "feed_counters",
    metadata,
    Column("category", String(64), primary_key=True),
    Column("last_seq", Integer, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("instance_id", String(255), nullable=True),
    Column("created_at", DateTime, nullable=False),
)

markers = Table(
    "markers",
    metadata,
    Column("marker_key", String(64), primary_key=True),
    Column("feed_base", String(1024), nullable=False),
    Column("category", String(64), nullable=False),
    Column("filter_hash", String(64), nullable=False),
    # An entry id is the parent's, of any length (migration 0005).
    Column("last_entry_id", Text, nullable=True),
    Column("last_page", Integer, nullable=True),
    Column("updated_at", DateTime, nullable=False),
)

failures = Table(
    "failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation", String(8), nullable=False),
    Column("marker_key", String(64), nullable=False),
    Column("category", String(64), nullable=False),
    Column("record_uuid", String(64), nullable=False),
    Column("entry_id", Text, nullable=False),
    Column("action", String(16), nullable=False),
    Column("links", Text, nullable=False),
    Column("error_class", String(64), nullable=False),
    Column("error_message", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("first_failed_at", DateTime, nullable=False),
    Column("last_failed_at", DateTime, nullable=False),
    Column("next_retry_at", DateTime, nullable=True),
    Column("note", Text, nullable=True),
)
Index("ix_failures_status", failures.c.status, failures.c.category)
Index("ix_failures_record", failures.c.category, failures.c.record_uuid)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(38), nullable=False, unique=True),
    Column("success", Boolean, nullable=False),
    Column("timestamp", DateTime, nullable=False),
    Column("resource_name", String(255), nullable=True),
    Column("record_uuid", String(64), nullable=True),
    Column("used_resource_url", String(1024), nullable=True),
    Column("available_resource_urls", Text, nullable=True),
    Column("parent_url", String(1024), nullable=True),
    Column("local_url", String(1024), nullable=True),
    Column("action", String(32), nullable=True),
    Column("details", Text, nullable=True),
    Column("operation", String(16), nullable=True),
    Column("link_type", String(32), nullable=True),
    Column("error_class", String(64), nullable=True),
    Column("next_message_uuid", String(38), nullable=True),
    Column("creator_instance_id", String(255), nullable=True),
    Column("merge_conflict_uuid", String(38), nullable=True),
    Column("voided", Boolean, nullable=False, default=False),
    Column("date_created", DateTime, nullable=False),
)
Index("ix_audit_timestamp", audit.c.timestamp)
# The audit page's record filter and a record's history (migration 0007).
Index("ix_audit_record_uuid", audit.c.record_uuid)
# The message a retry followed up (migration 0007); only the rows a retry followed.
Index(
    "ix_audit_next_message_uuid",
    audit.c.next_message_uuid,
    sqlite_where=audit.c.next_message_uuid.isnot(None),
    postgresql_where=audit.c.next_message_uuid.isnot(None),
)

# --- sync engine state (migration 0002) -------------------------------------------------------

# A failure waiting for another record names it here (category/uuid), so its arrival wakes it.
failures.append_column(Column("depends_on", String(64), nullable=True))
# The audit row of the latest attempt; a retry links it to the new row (next_message_uuid).
failures.append_column(Column("audit_uuid", String(38), nullable=True))
Index("ix_failures_depends_on", failures.c.depends_on)

locks = Table(
    "locks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("expires_at", DateTime, nullable=False),
)

run_state = Table(
    "run_state",
    metadata,
    Column("operation", String(16), primary_key=True),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    Column("outcome", String(16), nullable=True),
    Column("events_read", Integer, nullable=False, default=0),
    Column("applied", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("backoff_seconds", Float, nullable=True),
    Column("next_run_at", DateTime, nullable=True),
)

# --- conflicts (migration 0003) ---------------------------------------------------------------

# The last version this node and its parent agreed on, per record (written in the transaction of
# the pull or push that agreed on it): the base of three-way merges.
agreed = Table(
    "agreed",
    metadata,
    Column("category", String(64), primary_key=True),
    Column("uuid", String(64), primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),
    Column("parent_version", String(64), nullable=True),
    Column("pending_push", Boolean, nullable=False, default=False),
    Column("updated_at", DateTime, nullable=False),
)
Index("ix_agreed_pending", agreed.c.pending_push, agreed.c.category)

# Records whose local and parent versions could not be merged: base, local and remote kept.
conflicts = Table(
    "conflicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(38), nullable=False, unique=True),
    Column("category", String(64), nullable=False),
    Column("record_uuid", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("operation", String(8), nullable=False),
    Column("base_body", LargeBinary, nullable=True),
    Column("base_state", String(16), nullable=True),
    Column("local_body", LargeBinary, nullable=False),
    Column("local_state", String(16), nullable=False),
    Column("remote_body", LargeBinary, nullable=False),
    Column("remote_state", String(16), nullable=False),
    Column("remote_version", String(64), nullable=True),
    Column("paths", Text, nullable=False),
    Column("detected_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("resolved_at", DateTime, nullable=True),
    Column("resolved_by", String(255), nullable=True),
    Column("resolution", String(32), nullable=True),
)
Index("ix_conflicts_record", conflicts.c.category, conflicts.c.record_uuid, conflicts.c.status)
Index("ix_conflicts_status", conflicts.c.status)
# One open conflict per record (migration 0004): the write paths lock the record rows first, and
# this holds even for a path that forgot to.
Index(
    "ux_conflicts_open_record",
    conflicts.c.category,
    conflicts.c.record_uuid,
    unique=True,
    sqlite_where=conflicts.c.status == "open",
    postgresql_where=conflicts.c.status == "open",
)

# --- sign-out, audit by record, failure origins (migration 0007) ------------------------------

# Sessions signed out before they expired (``server.sessions``): a kept copy of the cookie is
# refused until then, when the row is pruned with the audit retention.
revoked_sessions = Table(
    "revoked_sessions",
    metadata,
    Column("nonce", String(64), primary_key=True),
    Column("expires_at", DateTime, nullable=False),
)

# The node a failed pull entry named as where its change began (None: a Java feed, or a push),
# so a retry labels the record as the entry did.
failures.append_column(Column("origin", String(ORIGIN_MAX), nullable=True))

# --- what the admin pages count (migration 0008) ----------------------------------------------

OPEN_FAILURE = text(
    "NOT success AND NOT voided AND next_message_uuid IS NULL AND merge_conflict_uuid IS NULL "
    "AND coalesce(error_class, '') <> 'Dismissed'"
)
"""A failed audit message still to handle: not retried since (a retry or a dismissal links the
row it follows up), not itself a dismissal ("Dismissed", ``sync.dismiss``) nor a conflict (those
are counted as conflicts), not voided. A query must use this very text for the partial index
below to serve it, as with :data:`FROM_CHILDREN`."""
# Each creator's newest message (the Children page's "last seen"): one look-up per child.
Index("ix_audit_creator_time", audit.c.creator_instance_id, audit.c.voided, audit.c.timestamp)
Index(
    "ix_audit_open_failures",
    audit.c.creator_instance_id,
    audit.c.resource_name,
    sqlite_where=OPEN_FAILURE,
    postgresql_where=OPEN_FAILURE,
)
# The failure an audit row reported (the audit page's statuses, retention).
Index("ix_failures_audit_uuid", failures.c.audit_uuid)
# The changes received from child accounts (the Children page's counts and last push); only
# those rows, so the events a child writes by the thousand when it pulls add nothing to it.
Index(
    "ix_events_from_children",
    events.c.via,
    events.c.timestamp,
    sqlite_where=FROM_CHILDREN,
    postgresql_where=FROM_CHILDREN,
)
