"""Resolving a stored conflict: write the chosen record here, queue it for the parent, close it.

Shared by ``fhirsync conflicts resolve``, the admin Conflicts page and
``POST /ws/rest/sync2/conflict/resolve`` (spec §6.5). Unlike Sync 2.0, the conflict is closed
(who resolved it and how is kept, with an audit row) and the parent receives the result as a new
version: the record's base becomes the parent's version the conflict was against, and the record
is marked for the next push (which sends it with that version as ``If-Match``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fhirsync import canonical
from fhirsync import categories as cats
from fhirsync.errors import InvalidResource, RecordNotFound
from fhirsync.records import RecordState, RecordWrite
from fhirsync.service.validation import normalize_resource
from fhirsync.store import agreed as agreed_repo
from fhirsync.store import audit
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store import records as record_repo
from fhirsync.store.audit import AuditEntry, AuditPolicy
from fhirsync.store.conflicts import Conflict
from fhirsync.store.engine import Database
from fhirsync.sync.merge import MISSING, Side, merge
from fhirsync.sync.reconcile import Reconciler, recheck_local

Take = Literal["local", "remote"]
_STATES = ("active", "voided", "retired", "deleted")


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a resolution wrote."""

    conflict_uuid: str
    category: str
    record_uuid: str
    resolution: str
    changed: bool
    """True when this node's record changed (a new local version)."""


def find_open(db: Database, conflict_uuid: str) -> Conflict:
    """The open conflict ``conflict_uuid`` (or a unique prefix); RecordNotFound otherwise."""
    with db.read() as conn:
        found = conflict_repo.get(conn, conflict_uuid)
    if found is None or found.status != conflict_repo.OPEN:
        raise RecordNotFound(f"no open conflict {conflict_uuid!r}")
    return found


def _still_open(db: Database, conflict_uuid: str) -> Conflict:
    with db.read() as conn:
        found = conflict_repo.get(conn, conflict_uuid)
    if found is None or found.status != conflict_repo.OPEN:
        how = found.resolution if found is not None else "gone"
        raise RecordNotFound(
            f"conflict {conflict_uuid} closed by itself ({how}): the record changed since"
        )
    return found


def chosen(
    conflict: Conflict,
    *,
    take: Take | None = None,
    body: Mapping[str, Any] | None = None,
    choices: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], RecordState]:
    """The resolved body and state: an edited body, or the three-way merge with the conflicting
    fields decided by ``choices`` or taken from one side (``take``, else this node's).

    Taking a side decides the fields in conflict only: a change the other side made to another
    field (the parent's, pulled after the conflict was stored, or an edit here) stays merged, as
    every change to a different field does.
    """
    if body is not None:
        return dict(body), "active"
    base = conflict.base()
    result = merge(
        Side(base, conflict.base_state or "active") if base is not None else None,
        Side(conflict.local(), conflict.local_state),
        Side(conflict.remote(), conflict.remote_state),
        choices=choices or {},
        prefer=take or "local",
    )
    if result.state not in _STATES:
        # A typed state: "active" instead of a misspelt "deleted" would undelete the record.
        raise InvalidResource(
            f"the record's state must be one of {', '.join(_STATES)}, not {result.state!r}"
        )
    return result.body, result.state  # type: ignore[return-value]


def resolve(
    db: Database,
    reconciler: Reconciler,
    conflict_uuid: str,
    *,
    resolved_by: str,
    take: Take | None = None,
    body: Mapping[str, Any] | None = None,
    choices: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Resolution:
    """Resolve one open conflict in one transaction (record, base, conflict, audit).

    The conflict is first decided again against the current local record (local edits since
    it was stored) by ``reconciler`` (:func:`~fhirsync.sync.reconcile.reconciler_for` the node:
    its policies, and the parent's label for the parent's version should it be taken): a
    conflict that closed by itself is RecordNotFound, saying so.
    """
    instance_id = reconciler.instance_id
    conflict = find_open(db, conflict_uuid)
    recheck_local(db, reconciler, [(conflict.category, conflict.record_uuid)])
    conflict = _still_open(db, conflict.uuid)
    value, state = chosen(conflict, take=take, body=body, choices=choices)
    category = cats.get(conflict.category)
    if category.is_fhir:
        value = dict(normalize_resource({**value, "id": conflict.record_uuid}, category.fhir_type))
    elif not isinstance(value, Mapping):
        raise InvalidResource("the resolved record must be a JSON object")
    moment = now or datetime.now(UTC)
    how = "edited" if body is not None else (take or "merged")
    with db.write() as conn:
        write = RecordWrite(
            conflict.category, conflict.record_uuid, value, instance_id, state, via=None
        )
        result = record_repo.write(conn, write, now=moment)
        base = agreed_repo.of_body(
            conflict.category,
            conflict.record_uuid,
            conflict.remote(),
            conflict.remote_state,
            conflict.remote_version,
            pending_push=True,
        )
        agreed_repo.upsert_many(conn, [base], now=moment)
        if not conflict_repo.close(
            conn, conflict.uuid, resolved_by=resolved_by, resolution=how, now=moment
        ):
            # Resolved elsewhere (or closed by a sync) since it was read: roll back this write.
            raise RecordNotFound(
                f"conflict {conflict.uuid} was closed meanwhile (resolved elsewhere, or the "
                "record changed): nothing was changed"
            )
        entry = AuditEntry(
            success=True,
            resource_name=conflict.category,
            record_uuid=conflict.record_uuid,
            action="RESOLVED",
            operation="RESOLVE",
            details=f"Conflict resolved by {resolved_by} ({how}); queued for the parent",
            creator_instance_id=instance_id,
            merge_conflict_uuid=conflict.uuid,
            timestamp=moment,
        )
        audit.insert_many(conn, [entry], AuditPolicy(True, True), now=moment)
    return Resolution(
        conflict.uuid, conflict.category, conflict.record_uuid, how, result.event is not None
    )


def parse_choice(raw: str) -> Any:
    """A value typed in a form or on the command line: JSON if it parses, else the text;
    an empty string removes the field."""
    if raw == "":
        return MISSING
    try:
        return canonical.loads(raw)
    except ValueError:
        return raw
