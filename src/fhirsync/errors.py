"""The one exception tree of fhirsync, split by what the engine should do about each error.

    FhirsyncError
    ├── TransientError            retry later; a marker never moves past it
    │   ├── ConnectionFailed      refused, reset, DNS, TLS
    │   ├── RequestTimeout        connect/read timeout
    │   ├── ServerUnavailable     5xx from a remote node
    │   └── ParentNotFound        the parent URL answers, but 404 where the sync API should be
    ├── RecordError               this one record cannot be applied; park it, carry on if configured
    │   ├── InvalidResource       body fails validation (FHIR or REST representation)
    │   ├── RecordNotFound        the record does not exist (404)
    │   ├── RecordGone            the record was deleted or voided (410)
    │   ├── RemoteRejected        a remote answered 4xx for this record
    │   └── DependencyMissing     a record it references is parked or absent
    ├── ConflictError             both sides changed the same record
    │   ├── CreatedMeanwhile      a concurrent request created the record first (retried)
    │   └── VersionMismatch       If-Match names a stale version (412)
    ├── RequestError              a caller's request is malformed (not about one stored record)
    │   ├── UnknownResourceType   a type or category this node does not serve
    │   ├── PayloadTooLarge       a body over the configured limit
    │   ├── MalformedFeed         a feed page that cannot be parsed
    │   └── FeedNotFound          the parent has no feed at the expected URL (404)
    ├── AuthError                 missing/wrong credentials or not allowed
    │   ├── Unauthenticated
    │   └── Forbidden
    ├── ConfigurationError        an invalid settings or sync2.json file (exit code 2)
    ├── BackupFailed              a copy of a node's database could not be made or checked
    └── RunStopped                a scheduled run is asked to end after its page (not a failure)

No HTTP status lives here; ``server/error_responses.py`` is the only mapping to HTTP.
"""

from __future__ import annotations


def _readable(text: str) -> str:
    # Error texts quote what came from outside (a parent's message, an element name of its
    # body) and end in audit rows, failure rows and run states: PostgreSQL text cannot hold a
    # NUL character (the whole commit would fail), and nobody can read one.
    return text.replace("\x00", "\\x00")


class FhirsyncError(Exception):
    """Base of every error fhirsync raises on purpose (its texts never hold a NUL character)."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        message = _readable(message)
        super().__init__(message)
        self.message = message
        self.detail = None if detail is None else _readable(detail)

    def __str__(self) -> str:
        return self.message


class TransientError(FhirsyncError):
    """A remote or resource could not be reached now; the same call may work later."""


class ConnectionFailed(TransientError):
    """Raised when a TCP/TLS connection to a remote node fails or drops."""


class RequestTimeout(TransientError):
    """Raised when a remote node does not answer within the configured timeout."""


class ServerUnavailable(TransientError):
    """Raised when a remote node answers with a 5xx status."""


class ParentNotFound(TransientError):
    """Raised when the configured parent URL answers 404 where a sync parent's API should be:
    a wrong ``parentFeedLocation``. Transient so that nothing is parked and the run backs off
    until the setting is fixed."""


class RecordError(FhirsyncError):
    """One record cannot be processed; other records are unaffected."""

    def __init__(
        self,
        message: str,
        *,
        category: str | None = None,
        uuid: str | None = None,
        detail: str | None = None,
        element: str | None = None,
    ) -> None:
        super().__init__(message, detail=detail)
        self.category = category
        self.uuid = uuid
        self.element = None if element is None else _readable(element)

    def summary(self, *, with_detail: bool = False) -> str:
        """``Class: message at element`` for audit and failure rows (never a record body);
        ``with_detail`` adds the detail (a remote's own message), cut to 500 characters."""
        where = f" at {self.element}" if self.element else ""
        extra = f" ({self.detail[:500]})" if with_detail and self.detail else ""
        return f"{type(self).__name__}: {self.message}{where}{extra}"


class InvalidResource(RecordError):
    """Raised when a body fails validation; ``element`` names the offending path."""


class RecordNotFound(RecordError):
    """Raised when a requested record does not exist."""


class RecordGone(RecordError):
    """Raised when a requested record was deleted, voided or retired (FHIR 410)."""


class RemoteRejected(RecordError):
    """Raised when a remote node refuses one record with a 4xx status (or a 5xx for that record
    alone: in a batch answered entry by entry, or a REST write's 500 with the remote's error)."""

    def __init__(self, message: str, *, status: int, **kwargs: str | None) -> None:
        super().__init__(message, **kwargs)
        self.status = status


class DependencyMissing(RecordError):
    """Raised when a record references another record that is parked or absent."""


class ConflictError(FhirsyncError):
    """Raised when both sides changed the same record since they last agreed."""


class CreatedMeanwhile(ConflictError):
    """Raised when a record another request created after this one looked would be overwritten
    by this one's create (the create is then retried as a merge)."""


class VersionMismatch(ConflictError):
    """Raised when an If-Match version is not the record's current version."""

    def __init__(self, message: str, *, current_version: int | None = None) -> None:
        super().__init__(message)
        self.current_version = current_version


class RequestError(FhirsyncError):
    """Raised when a request is malformed as a whole (not about one stored record)."""


class UnknownResourceType(RequestError):
    """Raised for a resource type, category or REST resource this node does not serve."""


class PayloadTooLarge(RequestError):
    """Raised when a request body exceeds the configured size limit."""


class MalformedFeed(RequestError):
    """Raised when an Atom feed page cannot be parsed or lacks required parts."""


class FeedNotFound(RequestError):
    """Raised when the parent answers 404 for a category's ``recent`` feed page."""


class AuthError(FhirsyncError):
    """Base of authentication and authorisation failures."""


class Unauthenticated(AuthError):
    """Raised when credentials are missing or wrong (never says which)."""


class Forbidden(AuthError):
    """Raised when an authenticated user may not do this."""


class ConfigurationError(FhirsyncError):
    """Raised for an invalid configuration; ``field`` names where it is wrong."""

    def __init__(
        self, message: str, *, field: str | None = None, source: str | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.source = source


class BackupFailed(FhirsyncError):
    """Raised when a node's database cannot be copied, or the copy fails its check."""


class RunStopped(FhirsyncError):
    """Raised by a scheduled run's listener between two pages when serve is stopping or the
    run's direction was disabled: the run ends there, keeping what it committed."""
