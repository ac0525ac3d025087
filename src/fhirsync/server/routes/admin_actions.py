"""The admin pages' bridge to the sync engine: pull now, push now, retry a message or a failure.

The engine (``sync/``) owns these operations; this module only calls them and turns their outcome
into a sentence for the page. While an operation is not part of this build it answers
``Unavailable`` with the reason, and the page shows the button disabled.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhirsync.errors import FhirsyncError
from fhirsync.server.deps import NodeContext


class Unavailable(FhirsyncError):
    """Raised when an operation the page offers is not available in this build or setup."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an operation did, in plain words, and whether everything succeeded."""

    ok: bool
    message: str
    new_message_uuid: str | None = None


def _engine_function(module: str, name: str) -> Callable[..., Any] | None:
    try:
        found = importlib.import_module(module)
    except ImportError:
        return None
    function = getattr(found, name, None)
    return function if callable(function) else None


def pull_unavailable_reason(node: NodeContext) -> str | None:
    """Why "Pull now" cannot be used now, or None when it can."""
    if not node.config.settings.manual_pull_enabled:
        return "Manual pull is switched off (setting manual_pull_enabled)."
    if node.config.parent_url is None:
        return "No parent is configured (general.parentFeedLocation is empty)."
    if _engine_function("fhirsync.sync.runner", "run_pull") is None:
        return "Pulling is not part of this build yet."
    return None


def push_unavailable_reason(node: NodeContext) -> str | None:
    """Why "Push now" cannot be used now, or None when it can."""
    if not node.config.settings.manual_push_enabled:
        return "Manual push is switched off (setting manual_push_enabled)."
    if node.config.parent_url is None:
        return "No parent is configured (general.parentFeedLocation is empty)."
    if _engine_function("fhirsync.sync.runner", "run_push") is None:
        return "Pushing is not part of this build yet."
    return None


def _run(direction: str, node: NodeContext) -> Outcome:
    reason = (pull_unavailable_reason if direction == "pull" else push_unavailable_reason)(node)
    if reason is not None:
        raise Unavailable(reason)
    function = _engine_function("fhirsync.sync.runner", f"run_{direction}")
    assert function is not None
    result = function(node.config, node.db)
    failures = int(getattr(result, "failures", 0) or 0)
    done = int(getattr(result, "applied", getattr(result, "records", 0)) or 0)
    verb = "Pulled" if direction == "pull" else "Pushed"
    if failures:
        return Outcome(False, f"{verb} {done} record(s); {failures} failed (see the audit log).")
    return Outcome(True, f"{verb} successfully ({done} record(s)).")


def pull_now(node: NodeContext) -> Outcome:
    """Run one pull of every enabled category now (spec §8.2 manual pull)."""
    return _run("pull", node)


def push_now(node: NodeContext) -> Outcome:
    """Run one push of every enabled category now (spec §8.2 manual push)."""
    return _run("push", node)


def retry_unavailable_reason() -> str | None:
    """Why retrying audit messages is impossible in this build, or None."""
    if _engine_function("fhirsync.sync.retry_audit", "retry_message") is None:
        return "Retrying is not part of this build yet."
    return None


def retry_message(node: NodeContext, uuid: str) -> Outcome:
    """Retry one failed audit message (spec §7.3); the new message's uuid when one was stored."""
    function = _engine_function("fhirsync.sync.retry_audit", "retry_message")
    if function is None:
        raise Unavailable("Retrying is not part of this build yet.")
    result = function(node.config, node.db, uuid)
    new_uuid = getattr(result, "new_message_uuid", None)
    ok = bool(getattr(result, "success", False))
    text = "Retry succeeded." if ok else "Retry failed: see the new message below."
    return Outcome(ok, text, str(new_uuid) if new_uuid else None)


def failure_actions_unavailable_reason() -> str | None:
    """Why parked failures cannot be retried or dismissed in this build, or None."""
    if _engine_function("fhirsync.sync.retry_failed", "retry_failure") is None:
        return "Retrying parked failures is not part of this build yet."
    return None


def retry_failure(node: NodeContext, failure_id: int) -> Outcome:
    """Try one parked failure again now."""
    function = _engine_function("fhirsync.sync.retry_failed", "retry_failure")
    if function is None:
        raise Unavailable("Retrying parked failures is not part of this build yet.")
    result = function(node.config, node.db, failure_id)
    ok = bool(getattr(result, "success", False))
    return Outcome(ok, "The record was applied." if ok else "The record failed again.")


def dismiss_failure(node: NodeContext, failure_id: int, reason: str, user: str) -> Outcome:
    """Give up on one parked failure; the reason and the user are kept in the audit log."""
    function = _engine_function("fhirsync.sync.retry_failed", "dismiss_failure")
    if function is None:
        raise Unavailable("Dismissing parked failures is not part of this build yet.")
    function(node.config, node.db, failure_id, reason=reason, user=user)
    return Outcome(True, "The failure was dismissed; the reason is in the audit log.")
