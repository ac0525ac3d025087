"""Operations a person starts by hand (admin pages and ``fhirsync audit``): retry and dismiss.

Both surfaces call these functions, so a retry from the terminal and from the page do the same
work: the failure is made due now, the run of its direction tries it first, and the engine links
the new audit row to the old one (``nextMessageUuid``). An operation that cannot be done answers
:class:`Unavailable` with the reason in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from fhirsync.errors import FhirsyncError
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
    if result.failures:
        return Outcome(
            False,
            f"{verb} {result.applied} record(s); {result.failures} failed "
            "(see Failed records and the audit log).",
        )
    return Outcome(True, f"{verb} successfully: {result.applied} record(s) applied.")


def run_retry(config: NodeConfig, db: Database, operation: str, ids: list[int]) -> RunFinished:
    """Make these failures due now, then run ``operation`` (due failures are tried first)."""
    with db.write() as conn:
        failures.due_now(conn, ids)
    if operation == "push":
        return run_push(config, db)
    return run_pull(config, db, wait=RETRY_WAIT)


def _retryable(message: audit_query.AuditMessage | None, uuid: str, own: str) -> str:
    """The message's operation (pull/push) when it can be retried; Unavailable otherwise."""
    if message is None:
        raise Unavailable(f"There is no audit message {uuid}.")
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
    with db.read() as conn:
        found = failures.get(conn, failure_id)
    if found is None or found.status not in failures.OPEN:
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


def retry_matching(config: NodeConfig, db: Database, flt: AuditFilter) -> RetryTotals:
    """Retry every retryable failed message of this node matching ``flt``, in one run per direction.

    Each message's open failure is made due; the runs then retry them all. Success is counted from
    the new audit rows the engine links to the old ones.
    """
    own = config.instance_id
    with db.read() as conn:
        uuids = audit_query.failed_uuids(conn, flt, own)
        messages = [m for m in (audit_query.get_message(conn, u) for u in uuids) if m]
        by_op: dict[str, list[int]] = {}
        for operation in ("pull", "push"):
            wanted = {
                (m.resource_name, m.record_uuid): m.uuid
                for m in messages
                if (m.operation or "").lower() == operation
            }
            if not wanted:
                continue
            by_op[operation] = [
                f.id
                for f in failures.list_open(conn, operation)
                if (f.category, f.record_uuid) in wanted or f.audit_uuid in wanted.values()
            ]
    runs = [describe(run_retry(config, db, op, ids)) for op, ids in by_op.items()]
    succeeded = failed = 0
    with db.read() as conn:
        resolved = _resolved(conn, [m.uuid for m in messages])
        for m in messages:
            after = audit_query.get_message(conn, m.uuid)
            nxt = after.next_message_uuid if after else None
            new = audit_query.get_message(conn, nxt) if nxt else None
            if new.success if new is not None else m.uuid in resolved:
                succeeded += 1
            else:
                failed += 1
    return RetryTotals(len(messages), succeeded, failed, runs)


def dismiss_failure(
    config: NodeConfig, db: Database, failure_id: int, reason: str, user: str
) -> Outcome:
    """Give up on one open failure; the reason and the user are kept in the audit log."""
    done = dismissal.dismiss(
        db, failure_id, reason=reason, user=user, instance_id=config.instance_id
    )
    f = done.failure
    return Outcome(
        True,
        f"Dismissed {f.category} {f.record_uuid}; the reason is in the audit log.",
        done.audit_uuid,
    )
