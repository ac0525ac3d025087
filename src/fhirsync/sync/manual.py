"""Operations a person starts by hand (admin pages and ``fhirsync audit``): retry and dismiss.

Both surfaces call these functions, so a retry from the terminal and from the page do the same
work: the failure is made due now, the run of its direction tries it first, and the engine links
the new audit row to the old one (``nextMessageUuid``). An operation that cannot be done answers
:class:`Unavailable` with the reason in plain words.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection

from fhirsync.errors import ConfigurationError, FhirsyncError
from fhirsync.settings import NodeConfig
from fhirsync.store import audit_query, failures
from fhirsync.store.audit_query import AuditFilter
from fhirsync.store.engine import Database
from fhirsync.sync import dismiss as dismissal
from fhirsync.sync.push_run import run_push
from fhirsync.sync.runner import run_pull
from fhirsync.sync.status import RunFinished

RETRY_WAIT = 30.0
"""Seconds a hand-started retry waits for a run of the same direction already going on."""


class Unavailable(FhirsyncError):
    """Raised when an operation cannot be done now (the message says why)."""


class NotFound(Unavailable):
    """Raised when the message or failure named does not exist at all (a mistyped id)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an operation did, in plain words, and whether everything succeeded."""

    ok: bool
    message: str
    new_message_uuid: str | None = None


def describe(result: RunFinished) -> Outcome:
    """A run's result as a sentence for a person."""
    verb = "Pulled" if result.operation == "pull" else "Pushed"
    what = "Pulling" if result.operation == "pull" else "Pushing"
    if result.outcome == "busy":
        return Outcome(False, f"Another {result.operation} is running; try again in a moment.")
    if result.outcome == "unreachable":
        return Outcome(False, f"{what} failed: the parent could not be reached ({result.error}).")
    if result.outcome == "configuration":
        return Outcome(
            False, f"{what} failed: the parent refused this node's credentials ({result.error})."
        )
    kept = (
        f"{result.conflicts} kept as conflict(s) for a person to resolve (see Conflicts)"
        if result.conflicts
        else ""
    )
    if result.failures:
        return Outcome(
            False,
            f"{verb} {result.applied} record(s); {result.failures} failed "
            "(see Failed records and the audit log)" + (f"; {kept}." if kept else "."),
        )
    if kept:
        return Outcome(False, f"{verb} {result.applied} record(s); {kept}.")
    return Outcome(True, f"{verb} successfully: {result.applied} record(s) applied.")


NO_PARENT = (
    "No parent is configured (general.parentFeedLocation is empty): "
    "there is no node to retry against."
)


def require_parent(config: NodeConfig) -> None:
    """ConfigurationError when no retry can run (there is no parent), raised before anything
    changes: a retry makes its failures due first, and a parked failure made due on a node
    whose run then cannot start leaves "Failed records" for "will be retried automatically"."""
    if config.parent_url is None:
        raise ConfigurationError(
            f"{NO_PARENT} Nothing was changed.",
            field="general.parentFeedLocation",
            source="sync2.json",
        )


def run_retry(config: NodeConfig, db: Database, operation: str, ids: list[int]) -> RunFinished:
    """Make these failures due now, then run ``operation`` (due failures are tried first)."""
    require_parent(config)
    with db.write() as conn:
        failures.due_now(conn, ids)
    if operation == "push":
        return run_push(config, db)
    return run_pull(config, db, wait=RETRY_WAIT)


def _retryable(message: audit_query.AuditMessage | None, uuid: str, own: str) -> str:
    """The message's operation (pull/push) when it can be retried; Unavailable otherwise."""
    if message is None:
        raise NotFound(f"There is no audit message {uuid}.")
    if message.success or message.next_message_uuid is not None:
        raise Unavailable("Only a failed message that was not retried yet can be retried.")
    if message.error_class == dismissal.ERROR_CLASS:
        raise Unavailable("This message records a dismissal; there is nothing to retry.")
    if message.creator_instance_id != own:
        raise Unavailable(
            "Retry cannot be done: this message was recorded by "
            f"{message.creator_instance_id}, not by this node ({own})."
        )
    operation = (message.operation or "").lower()
    if operation not in ("pull", "push"):
        raise Unavailable(f"Messages of operation {message.operation!r} cannot be retried.")
    return operation


def retry_message(config: NodeConfig, db: Database, uuid: str) -> Outcome:
    """Retry one failed audit message of this node (spec §7.3): its record gets a fresh try now."""
    require_parent(config)
    with db.read() as conn:
        message = audit_query.get_message(conn, uuid)
        operation = _retryable(message, uuid, config.instance_id)
        assert message is not None  # _retryable raised otherwise
        ids = [
            f.id
            for f in failures.list_open(conn, operation)
            if f.audit_uuid == uuid
            or (f.category == message.resource_name and f.record_uuid == message.record_uuid)
        ]
    result = run_retry(config, db, operation, ids)
    with db.read() as conn:
        after = audit_query.get_message(conn, uuid)
        new_uuid = after.next_message_uuid if after else None
        new = audit_query.get_message(conn, new_uuid) if new_uuid else None
        resolved = _resolved(conn, [uuid])
    if new is not None:
        ok = new.success
        return Outcome(ok, "Retry succeeded." if ok else "Retry failed again.", new.uuid)
    if uuid in resolved:
        return Outcome(True, "Retry succeeded.")
    return describe(result)


def _resolved(conn: Connection, uuids: list[str]) -> set[str]:
    """The failed messages whose failure is resolved now, though no message follows them up:
    with ``persistSuccessAudit`` off the success row is not stored, so nothing links to the
    failed one (spec §7.3) and a retry that worked was reported as failed again."""
    statuses = failures.status_by_audit(conn, uuids)
    return {uuid for uuid, status in statuses.items() if status == "resolved"}


def retry_failure(config: NodeConfig, db: Database, failure_id: int) -> Outcome:
    """Give one open failure a fresh set of tries now, then run its direction."""
    require_parent(config)
    with db.read() as conn:
        found = failures.get(conn, failure_id)
    if found is None:
        raise NotFound(f"There is no failure #{failure_id}.")
    if found.status not in failures.OPEN:
        raise Unavailable(f"There is no open failure #{failure_id} (already handled?).")
    result = run_retry(config, db, found.operation.lower(), [failure_id])
    with db.read() as conn:
        after = failures.get(conn, failure_id)
    if after is not None and after.status == "resolved":
        return Outcome(True, f"Retry succeeded: {found.category} {found.record_uuid} applied.")
    described = describe(result)
    if described.ok:
        return Outcome(False, "Retry failed again; the reason is shown with the failure.")
    return described


@dataclass(frozen=True, slots=True)
class RetryTotals:
    """What "retry all failed" did."""

    messages: int
    succeeded: int
    failed: int
    runs: list[Outcome]


_CHUNK = 1000
"""Failed messages read at a time by "retry all failed"."""


def retry_matching(config: NodeConfig, db: Database, flt: AuditFilter) -> RetryTotals:
    """Retry every retryable failed message of this node matching ``flt``, in one run per direction.

    Conflicts are left out: a person resolves them. The messages are read a chunk at a time, and
    all of them are retried (no cap). Each message's open failure is made due; the runs then
    retry them all. Success is counted from the new audit rows the engine links to the old ones.
    """
    require_parent(config)
    uuids: list[str] = []
    by_op: dict[str, set[int]] = {}
    with db.read() as conn:
        opened = {op: _OpenFailures(failures.list_open(conn, op)) for op in ("pull", "push")}
        for chunk in _failed_chunks(conn, flt, config.instance_id):
            for m in chunk:
                operation = (m.operation or "").lower()
                found = opened.get(operation)
                if found is None:
                    continue  # a row of no pull or push: nothing a run could retry
                uuids.append(m.uuid)
                by_op.setdefault(operation, set()).update(found.matching(m))
    runs = [describe(run_retry(config, db, op, sorted(ids))) for op, ids in by_op.items()]
    succeeded = 0
    with db.read() as conn:
        for start in range(0, len(uuids), _CHUNK):
            part = uuids[start : start + _CHUNK]
            followed = audit_query.follow_up_success(conn, part)
            resolved = _resolved(conn, part)
            succeeded += sum(followed.get(u, u in resolved) for u in part)
    return RetryTotals(len(uuids), succeeded, len(uuids) - succeeded, runs)


def _failed_chunks(
    conn: Connection, flt: AuditFilter, own: str
) -> Iterator[list[audit_query.AuditMessage]]:
    """Every retryable failed message of ``own`` matching ``flt``, a chunk at a time."""
    after = 0
    while chunk := audit_query.failed_messages(conn, flt, own, after_id=after, limit=_CHUNK):
        yield chunk
        after = chunk[-1].id or after


class _OpenFailures:
    """The open failures of one direction, found by audit message or by record."""

    def __init__(self, rows: list[failures.Failure]) -> None:
        self._by_audit: dict[str, list[int]] = {}
        self._by_record: dict[tuple[str, str], list[int]] = {}
        for f in rows:
            if f.audit_uuid:
                self._by_audit.setdefault(f.audit_uuid, []).append(f.id)
            self._by_record.setdefault((f.category, f.record_uuid), []).append(f.id)

    def matching(self, message: audit_query.AuditMessage) -> list[int]:
        """The ids of the open failures ``message`` reported (or of its record)."""
        record = (message.resource_name or "", message.record_uuid or "")
        return self._by_audit.get(message.uuid, []) + self._by_record.get(record, [])


def dismiss_failure(
    config: NodeConfig, db: Database, failure_id: int, reason: str, user: str
) -> Outcome:
    """Give up on one open failure; the reason and the user are kept in the audit log."""
    with db.read() as conn:
        if failures.get(conn, failure_id) is None:
            raise NotFound(f"There is no failure #{failure_id}.")
    done = dismissal.dismiss(
        db, failure_id, reason=reason, user=user, instance_id=config.instance_id
    )
    f = done.failure
    return Outcome(
        True,
        f"Dismissed {f.category} {f.record_uuid}; the reason is in the audit log.",
        done.audit_uuid,
    )
