"""What a parent knows about its child accounts: their instance ids and what each one sent.

A record or event written by a child account carries ``via = "child:{instance id}"`` (set by the
FHIR and REST write paths), so "which child did this come from" is a query, not extra bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from fhirsync.store.audit_query import still_failed
from fhirsync.store.tables import FROM_CHILDREN, audit, events, records, users

CHILD_VIA_PREFIX = "child:"


def via_for(instance_id: str) -> str:
    """The ``via`` value of changes received from the child ``instance_id``."""
    return CHILD_VIA_PREFIX + instance_id


def child_instance_ids(conn: Connection) -> dict[str, str]:
    """Instance id → account name of every child account."""
    rows = conn.execute(
        select(users.c.instance_id, users.c.name).where(
            users.c.role == "child", users.c.instance_id.is_not(None)
        )
    )
    return {str(r.instance_id): str(r.name) for r in rows}


def relaying_origins(conn: Connection) -> frozenset[str]:
    """The nodes whose changes reach this node through its children: the child accounts and the
    origins of the records received from them (a grandchild's, relayed by its parent)."""
    found = set(child_instance_ids(conn))
    if not found:
        return frozenset()  # a leaf: no scan of its records
    rows = conn.execute(select(records.c.origin).where(FROM_CHILDREN).distinct())
    found.update(str(r[0]) for r in rows)
    return frozenset(found)


def received_per_child(conn: Connection) -> dict[str, int]:
    """Instance id → number of records whose current version was received from that child."""
    rows = conn.execute(
        select(records.c.via, func.count()).where(FROM_CHILDREN).group_by(records.c.via)
    )
    return {str(via).removeprefix(CHILD_VIA_PREFIX): int(n) for via, n in rows}


def changes_per_child(conn: Connection) -> dict[str, int]:
    """Instance id → number of changes (events) received from that child, ever."""
    rows = conn.execute(
        select(events.c.via, func.count()).where(FROM_CHILDREN).group_by(events.c.via)
    )
    return {str(via).removeprefix(CHILD_VIA_PREFIX): int(n) for via, n in rows}


def last_push_per_child(conn: Connection) -> dict[str, datetime]:
    """Instance id → time (naive UTC) of the newest change received from that child."""
    rows = conn.execute(
        select(events.c.via, func.max(events.c.timestamp))
        .where(FROM_CHILDREN)
        .group_by(events.c.via)
    )
    return {str(via).removeprefix(CHILD_VIA_PREFIX): moment for via, moment in rows if moment}


@dataclass(frozen=True, slots=True)
class ChildReport:
    """What a child reported to this node's audit log (``/ws/rest/sync2/messages``)."""

    last_report: datetime | None
    """Time (naive UTC) of its newest message, voided ones aside."""
    open_failures: int
    """Its failed messages that still need someone (``audit_query.still_failed``)."""


def reports_per_child(conn: Connection) -> dict[str, ChildReport]:
    """Instance id → :class:`ChildReport` of every child account, in one statement: a look-up
    per child in the audit log's indexes, never a read of every row per child."""
    child = users.c.instance_id
    last = select(func.max(audit.c.timestamp)).where(
        audit.c.creator_instance_id == child, audit.c.voided.is_(False)
    )
    failed = (
        select(func.count())
        .select_from(audit)
        .where(audit.c.creator_instance_id == child, *still_failed())
    )
    rows = conn.execute(
        select(child, last.scalar_subquery(), failed.scalar_subquery()).where(
            users.c.role == "child", child.is_not(None)
        )
    )
    return {str(i): ChildReport(moment, int(n or 0)) for i, moment, n in rows}
