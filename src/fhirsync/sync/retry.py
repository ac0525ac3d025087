"""The one retry policy (STYLE principle 6): how long to wait, and what an error means for a run.

The same :class:`RetryPolicy` drives the scheduler's backoff between failed runs and the per-record
retries of failed records (with a different counter each).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from fhirsync.errors import (
    AuthError,
    ConfigurationError,
    DependencyMissing,
    FhirsyncError,
    RecordError,
    RequestError,
    TransientError,
)
from fhirsync.settings import NodeSettings

LONGEST_WAIT = timedelta(days=3650)
"""The furthest a retry is put off: ``retry_max_delay`` has no upper bound, and a date past the
calendar's end cannot be stored."""


class Decision(Enum):
    """What the engine does after an error."""

    STOP_RUN = "stop_run"
    """The parent is unreachable (or refuses us): stop the whole run, markers stay."""
    STOP_CATEGORY = "stop_category"
    """This category's feed is unusable: its marker stays, later categories carry on."""
    RETRY = "retry"
    """Retry the record later with backoff."""
    WAIT = "wait"
    """The record waits for a record it depends on; no attempt is counted."""
    PARK = "park"
    """Give up on the record until someone retries it by hand."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with a cap and jitter, plus the number of tries of one record."""

    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    max_attempts: int = 3
    jitter: float = 0.1
    """Fraction of the delay added or removed at random, so many nodes do not retry in step."""

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> RetryPolicy:
        """The policy of the node's ``retry_*`` and ``record_max_attempts`` settings."""
        return cls(
            base_delay=settings.retry_base_delay,
            factor=settings.retry_factor,
            max_delay=settings.retry_max_delay,
            max_attempts=settings.record_max_attempts,
        )

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            growth = self.factor ** max(0, attempt - 1)
        except OverflowError:
            # The counters have no bound (a scheduler's failed runs during a long outage, a
            # large record_max_attempts): 2.0 ** 1024 raised and ended the scheduler's thread.
            growth = math.inf
        raw = min(self.max_delay, self.base_delay * growth)
        return max(0.0, raw * (1 + self.jitter * (2 * rand() - 1)))

    def next_try(self, attempt: int, now: datetime) -> datetime:
        """When to try again after failed attempt ``attempt`` (at most :data:`LONGEST_WAIT`)."""
        return now + timedelta(seconds=min(self.delay(attempt), LONGEST_WAIT.total_seconds()))

    def decide(self, error: BaseException, attempt: int = 1) -> Decision:
        """What to do after ``error`` on attempt ``attempt`` (record-level counters)."""
        if isinstance(error, TransientError | AuthError | ConfigurationError):
            return Decision.STOP_RUN
        if isinstance(error, DependencyMissing):
            return Decision.WAIT
        if isinstance(error, RecordError):
            return Decision.RETRY if attempt < self.max_attempts else Decision.PARK
        if isinstance(error, RequestError):
            return Decision.STOP_CATEGORY
        if isinstance(error, FhirsyncError):
            return Decision.PARK
        raise error
