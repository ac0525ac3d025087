"""The admin pages' bridge to the sync engine: pull now, push now, retry a message or a failure.

The engine (``sync/``) owns these operations; this module only calls them and turns their outcome
into a sentence for the page. An operation that cannot run now answers
``Unavailable`` with the reason, and the page shows it in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhirsync.errors import FhirsyncError
from fhirsync.server.deps import NodeContext
from fhirsync.store import audit_query, failures
from fhirsync.sync.push_run import run_push
from fhirsync.sync.runner import run_pull
from fhirsync.sync.status import RunFinished


class Unavailable(FhirsyncError):
    """Raised when an operation the page offers is not available in this build or setup."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an operation did, in plain words, and whether everything succeeded."""

    ok: bool
    message: str
    new_message_uuid: str | None = None


def pull_unavailable_reason(node: NodeContext) -> str | None:
    """Why "Pull now" cannot be used now, or None when it can."""
    if not node.config.settings.manual_pull_enabled:
        return "Manual pull is switched off (setting manual_pull_enabled)."
    if node.config.parent_url is None:
        return "No parent is configured (general.parentFeedLocation is empty)."
    return None


def push_unavailable_reason(node: NodeContext) -> str | None:
    """Why "Push now" cannot be used now, or None when it can."""
    if not node.config.settings.manual_push_enabled:
        return "Manual push is switched off (setting manual_push_enabled)."
    if node.config.parent_url is None:
        return "No parent is configured (general.parentFeedLocation is empty)."
    return None


def _describe(result: RunFinished) -> Outcome:
    verb = "Pulled" if result.operation == "pull" else "Pushed"
    what = "Pulling" if result.operation == "pull" else "Pushing"
    if result.outcome == "busy":
        return Outcome(False, f"Another {result.operation} is running; try again in a moment.")
    if result.outcome == "unreachable":
        return Outcome(False, f"{what} failed: the parent could not be reached ({result.error}).")
    if result.failures:
        return Outcome(
            False,
            f"{verb} {result.applied} record(s); {result.failures} failed "
            "(see Failed records and the audit log).",
        )
    return Outcome(True, f"{verb} successfully: {result.applied} record(s) applied.")


def pull_now(node: NodeContext) -> Outcome:
    """Run one pull of every enabled category now (spec §8.2 manual pull)."""
    reason = pull_unavailable_reason(node)
    if reason is not None:
        raise Unavailable(reason)
    return _describe(run_pull(node.config, node.db))


def push_now(node: NodeContext) -> Outcome:
    """Run one push of every enabled category now (spec §8.2 manual push)."""
    reason = push_unavailable_reason(node)
    if reason is not None:
        raise Unavailable(reason)
    return _describe(run_push(node.config, node.db))


def retry_unavailable_reason() -> str | None:
    """Why retrying is impossible in this build, or None."""
    return None


def failure_actions_unavailable_reason() -> str | None:
    """Why parked failures cannot be retried in this build, or None."""
    return None


DISMISS_UNAVAILABLE = "Dismissing is not part of this build yet: retry after fixing the cause."


def _retry_pull(node: NodeContext, failure_ids: list[int]) -> RunFinished:
    with node.db.write() as conn:
        failures.requeue(conn, failure_ids)
    return run_pull(node.config, node.db, wait=30.0)


def retry_message(node: NodeContext, uuid: str) -> Outcome:
    """Retry one failed audit message (spec §7.3): its record gets a fresh try, now.

    Only failed messages of this node that have no next message can be retried. The engine links
    the new audit row to this one (``nextMessageUuid``).
    """
    own = node.config.instance_id
    with node.db.read() as conn:
        message = audit_query.get_message(conn, uuid)
        if message is None:
            raise Unavailable(f"There is no audit message {uuid}.")
        if message.success or message.next_message_uuid is not None:
            raise Unavailable("Only a failed message that was not retried yet can be retried.")
        if message.creator_instance_id != own:
            raise Unavailable(
                "Retry cannot be done: this message was recorded by "
                f"{message.creator_instance_id}, not by this node ({own})."
            )
        if (message.operation or "").lower() != "pull":
            raise Unavailable("Push failures are retried by the next push run.")
        ids = [
            f.id
            for f in failures.list_open(conn, "pull")
            if f.audit_uuid == uuid
            or (f.category == message.resource_name and f.record_uuid == message.record_uuid)
        ]
    result = _retry_pull(node, ids)
    with node.db.read() as conn:
        after = audit_query.get_message(conn, uuid)
    new_uuid = after.next_message_uuid if after else None
    with node.db.read() as conn:
        new = audit_query.get_message(conn, new_uuid) if new_uuid else None
    if new is not None:
        ok = new.success
        return Outcome(ok, "Retry succeeded." if ok else "Retry failed again.", new.uuid)
    described = _describe(result)
    return Outcome(described.ok, described.message, None)


def retry_failure(node: NodeContext, failure_id: int) -> Outcome:
    """Give one parked failure a fresh set of tries now, then pull."""
    return _describe(_retry_pull(node, [failure_id]))


def dismiss_failure(node: NodeContext, failure_id: int, reason: str, user: str) -> Outcome:
    """Give up on one parked failure; the reason and the user are kept in the audit log."""
    raise Unavailable(DISMISS_UNAVAILABLE)
