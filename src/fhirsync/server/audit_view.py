"""What the audit page and ``fhirsync audit`` both show: the list's filters, errors in plain words.

Kept apart from ``routes/admin_audit.py`` and free of FastAPI, so the command line can share it
without loading the web server (``tests/unit/cli/test_startup.py`` checks that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from fhirsync.errors import RequestError
from fhirsync.store.audit_query import AuditFilter, AuditMessage, naive_utc

# What an engine error class means, for people who do not read stack traces.
PLAIN_ERRORS = {
    "InvalidResource": "The record was rejected because its content is not valid.",
    "RecordNotFound": "The record no longer exists where the feed said it would be.",
    "RecordGone": "The record was deleted on the other side.",
    "RemoteRejected": "The other node refused this record.",
    "DependencyMissing": "A record this one refers to (for example its patient) is missing or "
    "failed, so this one waits for it.",
    "ConnectionFailed": "The other node could not be reached (network problem).",
    "RequestTimeout": "The other node did not answer in time.",
    "ServerUnavailable": "The other node had an internal problem (HTTP 5xx).",
    "VersionMismatch": "The record changed on both sides at the same time.",
    "ConflictError": "The record changed on both sides (a conflict).",
    "Unauthenticated": "The other node did not accept this node's user name or password.",
    "Forbidden": "The other node does not allow this node to do this.",
    "ConfigurationError": "This node's configuration is incomplete or invalid.",
    "Dismissed": "An administrator gave up on this record; it will not be retried.",
}


@dataclass(frozen=True, slots=True)
class Filters:
    """The list's filter form, as the query string carries it."""

    status: str = "ALL"
    """ALL, SUCCESS, FAILURE, or OPEN: the failures still to handle (the dashboard's count)."""
    operation: str = "ALL"
    category: str = ""
    origin: str = ""
    since: str = ""
    until: str = ""
    record: str = ""
    """One record's uuid (the conflict page links to its messages)."""

    def to_filter(self) -> AuditFilter:
        """The store's filter for these form values; RequestError for a time that is none, or
        a range that ends before it starts (it would match nothing, and look like no data)."""
        since = _parse_time(self.since, "since")
        until = _parse_time(self.until, "until")
        if since is not None and until is not None and since > until:
            raise RequestError(
                f"The 'since' time {self.since!r} is after the 'until' time {self.until!r}: "
                "no message can match"
            )
        return AuditFilter(
            success={"SUCCESS": True, "FAILURE": False, "OPEN": False}.get(self.status.upper()),
            operation=self.operation if self.operation.upper() in ("PULL", "PUSH") else None,
            resource_name=self.category or None,
            creator_instance_id=self.origin or None,
            since=since,
            until=until,
            record_uuid=self.record.strip() or None,
            still_to_handle=self.status.upper() == "OPEN",
        )

    def query(self, **extra: object) -> str:
        """The query string of these filters (plus ``extra``), for links."""
        values: dict[str, str] = {}
        for name in ("status", "operation", "category", "origin", "since", "until", "record"):
            value = getattr(self, name)
            if value and value != "ALL":
                values[name] = value
        values.update({k: str(v) for k, v in extra.items()})
        return urlencode(values)


def _parse_time(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        # Converted to the stored naive UTC here: a time with an offset at the edge of the
        # calendar (9999-12-31T23:59-05:00) parses but has no UTC equivalent.
        return naive_utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError) as exc:
        raise RequestError(f"The '{name}' time is not a date and time: {value!r}") from exc


def plain_error(message: AuditMessage) -> str | None:
    """The failure of ``message`` in plain words (None for a success)."""
    if message.success:
        return None
    if message.merge_conflict_uuid:
        return PLAIN_ERRORS["ConflictError"]
    known = PLAIN_ERRORS.get(message.error_class or "")
    first_line = (message.details or "").strip().splitlines()[0:1]
    reason = first_line[0] if first_line else "No reason was recorded."
    return f"{known} ({reason})" if known else reason
