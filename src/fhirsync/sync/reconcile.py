"""Deciding a record both this node and its parent may have changed: base, local, remote.

Used by pull (as the local side's commit hook, inside the page's write transaction) and by push
(when the parent refuses a stale ``If-Match`` with 412). Against the last agreed version (the base):

- only the parent changed → take the parent's version (what pull always did);
- only this node changed → keep it (push sends it); both hold the same → just agree;
- both changed → three-way merge (``sync/merge.py``). Different fields merge automatically: the
  merged record is written here as a local change (so push sends it up) and an audit row records
  the merge. Same field changed differently → the category's policy decides (``parent-wins``,
  ``child-wins``, ``newest-wins``) or, under ``manual``, a conflict is stored with base, local and
  remote, and both nodes keep their own version until a person resolves it.

An open conflict follows the record: whenever a pull brings the parent's record, or this node's
record changes (:meth:`Reconciler.recheck`, run after every local write through the FHIR and REST
APIs and before a resolution), the decision is made again with the current local record against
the conflict's base and remote. The conflict then closes by itself when both sides hold the same
version, when the local side went back to the base (the parent's version is taken) or when the
change now merges cleanly; otherwise its local side and fields are refreshed. Every automatic
close is audited (``CONVERGED``).

``newest-wins`` compares the parent's ``meta.lastUpdated`` with this node's ``last_updated``. When a
side has no time, the times are equal, or the parent's time is more than :data:`CLOCK_SKEW` ahead
of this node's clock (clocks disagree, so the times cannot be compared), the parent wins: every
child then makes the same decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection

from fhirsync import canonical
from fhirsync import categories as cats
from fhirsync.records import Record, RecordState, RecordWrite
from fhirsync.settings import NodeConfig
from fhirsync.store import agreed as agreed_repo
from fhirsync.store import audit as audit_repo
from fhirsync.store import conflicts as conflict_repo
from fhirsync.store import records as record_repo
from fhirsync.store.agreed import Agreed
from fhirsync.store.audit import AuditEntry, AuditPolicy
from fhirsync.store.conflicts import Conflict, ConflictNote
from fhirsync.store.engine import Database
from fhirsync.store.local import CommitHook, PageCommit
from fhirsync.sync.merge import MergeResult, Prefer, Side, merge

Policy = Literal["manual", "parent-wins", "child-wins", "newest-wins"]
CLOCK_SKEW = timedelta(minutes=5)
PULLED_VIA = "parent"
Kind = Literal["take-remote", "keep-local", "agree", "merged", "conflict"]


@dataclass(frozen=True, slots=True)
class Remote:
    """The parent's version of a record."""

    body: Mapping[str, Any]
    state: RecordState
    parent_version: str | None = None
    last_updated: datetime | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one record."""

    kind: Kind
    write: RecordWrite | None = None
    agreed: Agreed | None = None
    conflict: ConflictNote | None = None
    merged: MergeResult | None = None
    policy: Policy = "manual"


def remote_of(body: Mapping[str, Any], state: RecordState) -> Remote:
    """The parent's version from a body it served (its ``meta`` gives version and time)."""
    meta = body.get("meta")
    version = last = None
    if isinstance(meta, Mapping):
        raw_version = meta.get("versionId")
        version = str(raw_version) if raw_version is not None else None
        if version is not None and not cats.is_valid_id(version):
            # Kept as the base of the next push (agreed.parent_version, 64 characters, FHIR's
            # limit of an id, where fhir_core allows 255): PostgreSQL refused a longer one and the
            # whole page failed to commit, at every run. Left out, as push leaves out such an ETag.
            version = None
        last = _instant(meta.get("lastUpdated"))
    return Remote(body, state, version, last)


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def decide(
    local: Record | None,
    base: Agreed | None,
    remote: Remote,
    *,
    category: str,
    uuid: str,
    policy: Policy,
    instance_id: str,
    operation: str,
    now: datetime,
    remote_write: RecordWrite | None = None,
    remote_origin: str | None = None,
) -> Decision:
    """The decision for one record (see the module docstring).

    ``remote_write``: the parent's version as pulled (its origin named); else it is written,
    when taken, with ``remote_origin`` (the parent's label) as origin."""
    remote_hash = canonical.content_hash(remote.body)
    agreed_remote = agreed_repo.of_body(
        category, uuid, remote.body, remote.state, remote.parent_version
    )
    take = remote_write or RecordWrite(
        category, uuid, remote.body, remote_origin or instance_id, remote.state, via=PULLED_VIA
    )
    if local is None:
        return Decision("take-remote", take, agreed_remote)
    same = (local.content_hash, local.state) == (remote_hash, remote.state)
    if same:
        return Decision("agree", None, agreed_remote)
    if base is None:
        # Never agreed before: the parent's version wins, as in Sync 2.0 (spec §6.2).
        return Decision("take-remote", take, agreed_remote)
    local_changed = (local.content_hash, local.state) != (base.content_hash, base.state)
    remote_changed = (remote_hash, remote.state) != (base.content_hash, base.state)
    if not local_changed:
        return Decision("take-remote", take, agreed_remote)
    if not remote_changed:
        # Read from the parent now: a version agreed with a former parent is unchecked no more.
        known = None if base.parent_version == agreed_repo.UNCHECKED else base.parent_version
        kept = replace(base, parent_version=remote.parent_version or known)
        return Decision("keep-local", None, kept)
    local_body = canonical.unify(local.resource())
    result = merge(
        Side(base.resource(), base.state),
        Side(local_body, local.state),
        Side(canonical.unify(remote.body), remote.state),
        prefer=_preference(policy, local, remote, now),
    )
    if not result.clean:
        note = ConflictNote(
            category=category,
            record_uuid=uuid,
            operation=operation,
            base_body=base.body,
            base_state=base.state,
            local_body=canonical.dumps(local_body),
            local_state=local.state,
            remote_body=canonical.dumps(canonical.unify(remote.body)),
            remote_state=remote.state,
            remote_version=remote.parent_version,
            paths=result.unresolved,
        )
        return Decision("conflict", None, None, note, result, policy)
    state: RecordState = result.state  # type: ignore[assignment]
    merged_hash = canonical.content_hash(result.body)
    if (merged_hash, state) == (remote_hash, remote.state):
        return Decision("take-remote", take, agreed_remote, merged=result, policy=policy)
    pending = replace(agreed_remote, pending_push=True)
    if (merged_hash, state) == (local.content_hash, local.state):
        return Decision("merged", None, pending, merged=result, policy=policy)
    write = RecordWrite(category, uuid, result.body, instance_id, state, via=None)
    return Decision("merged", write, pending, merged=result, policy=policy)


def _preference(policy: Policy, local: Record, remote: Remote, now: datetime) -> Prefer | None:
    if policy == "parent-wins":
        return "remote"
    if policy == "child-wins":
        return "local"
    if policy == "newest-wins":
        theirs = remote.last_updated
        if theirs is None or theirs > now + CLOCK_SKEW or theirs == local.last_updated:
            return "remote"
        return "local" if local.last_updated > theirs else "remote"
    return None


def audit_for(decision: Decision, base_entry: AuditEntry) -> AuditEntry | None:
    """The always-kept audit row of a merge or conflict (None for ordinary outcomes)."""
    merged = decision.merged
    if decision.kind == "conflict" and decision.conflict is not None:
        paths = ", ".join(decision.conflict.paths)
        return replace(
            base_entry,
            success=False,
            action="CONFLICT",
            details=f"Merge conflict on {paths}: both versions kept until resolved",
            error_class="ConflictError",
            merge_conflict_uuid=decision.conflict.uuid,
            previous_uuid=None,
            uuid="",
        ).with_uuid()
    if merged is None or not (merged.from_remote or merged.conflicts):
        return None
    decided = [c.path for c in merged.conflicts]
    how = f"; {decision.policy} decided {', '.join(decided)}" if decided else ""
    took = ", ".join(merged.from_remote) or "nothing"
    return replace(
        base_entry,
        success=True,
        action="MERGED",
        details=f"Merged automatically (parent's fields: {took}{how})",
        error_class=None,
        previous_uuid=None,
        uuid="",
    ).with_uuid()


@dataclass
class Reconciler:
    """Conflict handling of one node: its policies, its clock."""

    instance_id: str
    policies: Mapping[str, Policy] = field(default_factory=dict)
    clock: Callable[[], datetime] = field(default=datetime.now)
    parent: str | None = None
    """The origin of the parent's version when it is taken outside a pull (a conflict that
    closes): the parent's URL, as pull labels a change whose feed entry names no origin."""

    def policy(self, category: str) -> Policy:
        """The policy of ``category`` (``manual`` unless configured)."""
        return self.policies.get(category, "manual")

    def pulled(self, conn: Connection, batch: PageCommit, now: datetime) -> PageCommit:
        """The commit hook of pull: decide every pulled write against local and base."""
        return self._decided(conn, batch, now, operation="PULL")

    def pushed(self, conn: Connection, batch: PageCommit, now: datetime) -> PageCommit:
        """The commit hook of push: decide the parent's copies of records it refused as stale
        (412), written into the page as pulled writes, against the local record and base as
        they are in the commit's transaction. A local change made while the batch was in
        flight is then merged, never overwritten by a decision taken on the copy that was sent.
        Unlike pull, a local version kept (the parent still holds the base) is queued to go up
        again: the event that sent it is behind the push marker."""
        return self._decided(conn, batch, now, operation="PUSH")

    def _decided(
        self, conn: Connection, batch: PageCommit, now: datetime, *, operation: str
    ) -> PageCommit:
        if not any(w.via == PULLED_VIA for w in batch.writes):
            return batch
        pushing = operation == "PUSH"
        state = _State.load(conn, [(w.category, w.uuid) for w in batch.writes])
        writes: list[RecordWrite] = []
        write_audit: list[AuditEntry] = []
        out = _Collected()
        for index, w in enumerate(batch.writes):
            entry = batch.write_audit[index] if index < len(batch.write_audit) else None
            if w.via != PULLED_VIA:
                writes.append(w)
                if entry is not None:
                    write_audit.append(entry)
                continue
            key = (w.category, w.uuid)
            local, base = state.records.get(key), state.bases.get(key)
            if pushing and local is None:
                continue  # gone here since it was sent: nothing left to decide
            remote = self._remote_of_write(w, local, base)
            decision = decide(
                local,
                base,
                remote,
                category=w.category,
                uuid=w.uuid,
                policy=self.policy(w.category),
                instance_id=self.instance_id,
                operation=operation,
                now=now,
                remote_write=w,
            )
            if pushing and decision.kind == "keep-local" and decision.agreed is not None:
                decision = replace(decision, agreed=replace(decision.agreed, pending_push=True))
            decision = out.add(decision, state.open.get(key), entry, now=now)
            if decision.write is not None:
                writes.append(decision.write)
                if entry is not None and not pushing:
                    write_audit.append(entry)
        out.close_all(conn, self.instance_id, now=now)
        return replace(
            batch,
            writes=writes,
            write_audit=write_audit,
            agreed=[*batch.agreed, *out.agreed],
            conflicts=[*batch.conflicts, *out.conflicts],
            kept_audit=[*batch.kept_audit, *out.audit],
        )

    def _remote_of_write(self, w: RecordWrite, local: Record | None, base: Agreed | None) -> Remote:
        if w.body is not None:
            return remote_of(w.body, w.state)
        # A pulled void/retire/delete carries no body: the parent's body is the last one agreed.
        if base is not None:
            return Remote(base.resource(), w.state)
        body = local.resource() if local is not None else {}
        return Remote(body, w.state)

    def recheck(
        self, conn: Connection, keys: Sequence[tuple[str, str]] | None, now: datetime
    ) -> int:
        """Decide the open conflicts of ``keys`` (all open ones when None) again against the
        current local record, in the caller's write transaction; returns how many changed.

        A conflict whose local side is unchanged is left alone. Otherwise it closes (agree,
        take the parent's version, or a clean merge written here and queued for push) or is
        refreshed with the current local body and the fields still in conflict.
        """
        if keys is None:
            keys = [(c.category, c.record_uuid) for c in conflict_repo.list_conflicts(conn)]
        state = _State.load(conn, keys)
        out = _Collected()
        writes: list[RecordWrite] = []
        for key, conflict in state.open.items():
            local = state.records.get(key)
            base = state.bases.get(key) or _base_of(conflict)
            if local is None or base is None or _local_unchanged(conflict, local):
                continue
            decision = decide(
                local,
                base,
                Remote(conflict.remote(), conflict.remote_state, conflict.remote_version),
                category=conflict.category,
                uuid=conflict.record_uuid,
                policy=self.policy(conflict.category),
                instance_id=self.instance_id,
                operation=conflict.operation,
                now=now,
                remote_origin=self.parent,
            )
            entry = AuditEntry(
                success=True,
                resource_name=conflict.category,
                record_uuid=conflict.record_uuid,
                action="UPDATED",
                operation="RESOLVE",
                details="",
                creator_instance_id=self.instance_id,
                timestamp=now,
            )
            decision = out.add(decision, conflict, entry, now=now)
            if decision.write is not None:
                writes.append(decision.write)
        if writes:
            record_repo.write_many(conn, writes, now=now)
        agreed_repo.upsert_many(conn, out.agreed, now=now)
        conflict_repo.record_many(conn, out.conflicts, now=now)
        out.close_all(conn, self.instance_id, now=now)
        audit_repo.insert_many(conn, out.audit, _KEEP_ALL, now=now)
        return len(out.conflicts) + len(out.closed)


_KEEP_ALL = AuditPolicy(persist_success=True, persist_failure=True)


def _base_of(conflict: Conflict) -> Agreed | None:
    """The conflict's own base, should the agreed row be missing (never decide without one:
    no base means the parent's version wins, which would drop the local side)."""
    body = conflict.base()
    if body is None or conflict.base_state is None:
        return None
    return agreed_repo.of_body(
        conflict.category, conflict.record_uuid, body, conflict.base_state, None
    )


def _local_unchanged(conflict: Conflict, local: Record) -> bool:
    stored = (canonical.content_hash(conflict.local()), conflict.local_state)
    return stored == (local.content_hash, local.state)


def recheck_local(
    db: Database, reconciler: Reconciler, keys: Sequence[tuple[str, str]] | None = None
) -> int:
    """After local writes: :meth:`Reconciler.recheck` the open conflicts of ``keys`` (all open
    ones when None). Costs one read when none of them has an open conflict."""
    with db.read() as conn:
        if keys is None:
            pending = conflict_repo.count_open(conn) > 0
        else:
            by_cat: dict[str, list[str]] = {}
            for category, uuid in keys:
                by_cat.setdefault(category, []).append(uuid)
            pending = any(conflict_repo.open_for(conn, c, u) for c, u in by_cat.items())
    if not pending:
        return 0
    with db.write() as conn:
        return reconciler.recheck(conn, keys, reconciler.clock())


@dataclass
class _State:
    records: dict[tuple[str, str], Record]
    bases: dict[tuple[str, str], Agreed]
    open: dict[tuple[str, str], Conflict]

    @classmethod
    def load(cls, conn: Connection, keys: Sequence[tuple[str, str]]) -> _State:
        by_cat: dict[str, list[str]] = {}
        for category, uuid in keys:
            by_cat.setdefault(category, []).append(uuid)
        state = cls({}, {}, {})
        for category, uuids in by_cat.items():
            found = record_repo.get_many(conn, [category], uuids, for_update=True)
            state.records.update({(category, u): r for u, r in found.items()})
            state.bases.update(
                {(category, u): a for u, a in agreed_repo.get_many(conn, category, uuids).items()}
            )
            state.open.update(
                {(category, u): c for u, c in conflict_repo.open_for(conn, category, uuids).items()}
            )
        return state


@dataclass
class _Collected:
    """Agreed rows, conflicts and audit rows gathered over a page's decisions."""

    agreed: list[Agreed] = field(default_factory=list)
    conflicts: list[ConflictNote] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    closed: list[tuple[Conflict, Kind]] = field(default_factory=list)

    def add(
        self,
        decision: Decision,
        open_conflict: Conflict | None,
        entry: AuditEntry | None,
        *,
        now: datetime,
    ) -> Decision:
        if decision.conflict is not None and open_conflict is not None:
            # One open conflict per record: refresh it under its own uuid.
            decision = replace(
                decision, conflict=replace(decision.conflict, uuid=open_conflict.uuid)
            )
        if decision.kind == "keep-local" and open_conflict is not None and decision.agreed:
            # The parent went back to the base: the conflict is over and this node's version,
            # held back while it was open, must now go up.
            decision = replace(decision, agreed=replace(decision.agreed, pending_push=True))
        if decision.agreed is not None:
            self.agreed.append(decision.agreed)
        if decision.conflict is not None:
            self.conflicts.append(decision.conflict)
        elif open_conflict is not None and decision.kind in _CLOSING:
            self.closed.append((open_conflict, decision.kind))
        if entry is not None:
            row = audit_for(decision, entry)
            if row is not None:
                self.audit.append(row)
        return decision

    def close_all(self, conn: Connection, instance_id: str, *, now: datetime) -> None:
        """Close the conflicts the decisions settled, each with an always-kept audit row."""
        rows: list[AuditEntry] = []
        for conflict, kind in self.closed:
            how = _CLOSING[kind]
            if not conflict_repo.close(
                conn, conflict.uuid, resolved_by="sync", resolution=how, now=now
            ):
                continue  # a person resolved it meanwhile: theirs is the closing to audit
            rows.append(
                AuditEntry(
                    success=True,
                    resource_name=conflict.category,
                    record_uuid=conflict.record_uuid,
                    action="CONVERGED",
                    operation="RESOLVE",
                    details=f"Conflict closed by itself: {_CLOSED_WHY[how]}",
                    creator_instance_id=instance_id,
                    merge_conflict_uuid=conflict.uuid,
                    timestamp=now,
                ).with_uuid()
            )
        if rows:
            audit_repo.insert_many(conn, rows, _KEEP_ALL, now=now)


_CLOSING: Mapping[Kind, str] = {
    "agree": "converged",
    "take-remote": "converged",
    "merged": "merged",
    "keep-local": "local",
}
_CLOSED_WHY = {
    "converged": "both sides hold the same version",
    "merged": "the changes now merge without a conflicting field",
    "local": "the parent went back to the agreed version; this node's is sent up",
}


def reconciler_for(config: NodeConfig) -> Reconciler:
    """The conflict handling of ``config``'s node (its instance id and per-category policies)."""
    return Reconciler(
        config.instance_id,
        dict(config.settings.conflict_policies),
        lambda: datetime.now(UTC),
        config.parent_url,
    )


def conflict_hook(config: NodeConfig) -> CommitHook:
    """Pull's commit hook: pulled writes are decided against the local copy and the base."""
    return reconciler_for(config).pulled
