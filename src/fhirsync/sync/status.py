"""Typed run events (STYLE principle 7): what a run reports, as values, never patient data.

The runner emits them to a listener; the CLI renders them as a progress bar, tests assert on them,
and the run state in the store keeps the last :class:`RunFinished`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["ok", "failures", "unreachable", "configuration", "busy", "stopped"]
"""How a run ended; "stopped": a scheduled run was asked to end early (serve stopping, or its
direction disabled) and kept what it had committed."""


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run began for these categories (in this order)."""

    operation: str
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunProgress:
    """A page of ``category`` was committed; counts are totals of this category so far."""

    operation: str
    category: str
    done: int
    """Feed entries read."""
    total: int | None
    """Entries known to exist, when the feed says (None otherwise)."""
    applied: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class RecordFailed:
    """One record failed; ``status`` says what happens next (retrying, waiting, parked)."""

    operation: str
    category: str
    uuid: str
    error_class: str
    attempt: int
    status: str


@dataclass(frozen=True, slots=True)
class CategoryStopped:
    """A category stopped early (its feed is broken); other categories carry on."""

    operation: str
    category: str
    error_class: str
    message: str


@dataclass(frozen=True, slots=True)
class RunFinished:
    """A run ended."""

    operation: str
    outcome: Outcome
    events_read: int
    applied: int
    failures: int
    """Records that failed in this run (retrying, waiting or parked)."""
    seconds: float
    error: str | None = None
    conflicts: int = 0
    """Changes kept as conflicts for a person to resolve (not counted in ``applied``)."""


RunEvent = RunStarted | RunProgress | RecordFailed | CategoryStopped | RunFinished
Listener = Callable[[RunEvent], None]


def on_progress(listener: Listener, action: Callable[[], None]) -> Listener:
    """``listener``, calling ``action`` first at each :class:`RunProgress`."""

    def wrapped(event: RunEvent) -> None:
        if isinstance(event, RunProgress):
            action()
        listener(event)

    return wrapped


def ignore(_event: RunEvent) -> None:
    """A listener that drops every event."""
