"""The admin pages' bridge to the sync engine: pull now, push now, retry a message or a failure.

The engine (``sync/``) owns these operations; this module only calls them and turns their outcome
into a sentence for the page. An operation that cannot run now answers
``Unavailable`` with the reason, and the page shows it in plain words.
"""

from __future__ import annotations

from fhirsync.server.deps import NodeContext
from fhirsync.store.audit_query import AuditFilter
from fhirsync.sync import manual
from fhirsync.sync.push_run import run_push
from fhirsync.sync.runner import run_pull

Unavailable = manual.Unavailable
Outcome = manual.Outcome
_describe = manual.describe


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


def retry_unavailable_reason(node: NodeContext) -> str | None:
    """Why Retry cannot be used now, or None when it can.

    Without a parent no run can start. The engine's retry gives the failure a fresh set of
    tries before it starts the run, so it is refused here, before anything changes: a parked
    failure would otherwise leave the parked count for "Will be retried automatically".
    """
    if node.config.parent_url is None:
        return manual.NO_PARENT
    return None


def failure_actions_unavailable_reason(node: NodeContext) -> str | None:
    """Why parked failures cannot be retried now, or None."""
    return retry_unavailable_reason(node)


def _retry_allowed(node: NodeContext) -> None:
    reason = retry_unavailable_reason(node)
    if reason is not None:
        raise Unavailable(f"{reason} Nothing was changed.")


def retry_message(node: NodeContext, uuid: str) -> Outcome:
    """Retry one failed audit message (spec §7.3), as `fhirsync audit retry UUID` does."""
    _retry_allowed(node)
    return manual.retry_message(node.config, node.db, uuid)


def retry_failure(node: NodeContext, failure_id: int) -> Outcome:
    """Give one open failure a fresh set of tries now, then run its direction."""
    _retry_allowed(node)
    return manual.retry_failure(node.config, node.db, failure_id)


def retry_matching(node: NodeContext, flt: AuditFilter) -> manual.RetryTotals:
    """Retry every retryable failed message of this node matching ``flt``."""
    _retry_allowed(node)
    return manual.retry_matching(node.config, node.db, flt)


def dismiss_failure(node: NodeContext, failure_id: int, reason: str, user: str) -> Outcome:
    """Give up on one open failure; the reason and the user are kept in the audit log."""
    return manual.dismiss_failure(node.config, node.db, failure_id, reason, user)
