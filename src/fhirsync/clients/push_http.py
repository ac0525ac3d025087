"""Sending pushed changes to the parent over HTTP, each batch stamped with its first origin.

The push engine (``sync/push.py``) needs one thing the generic client interface does not carry:
the ORIGIN of each change, sent as ``X-Fhirsync-Origin`` so the parent (and every node after it)
records where the change began. This module sends one batch of one category with one origin:

- FHIR categories: one ``transaction`` Bundle of ``PUT {Type}/{id}`` (active records, upsert
  keeping the id) and ``DELETE {Type}/{id}`` (voided/retired) entries; when the parent refuses it
  for one entry, the same entries as a ``batch`` Bundle, answered entry by entry. A body given as
  a :class:`RawBody` (the stored bytes) is spliced into the Bundle as it is;
- REST categories: ``POST /ws/rest/v1/{resource}`` (create or update, uuid kept) or ``DELETE``
  (``?purge`` for a deleted record), one request per record on a keep-alive connection.

Errors follow the client contract of ``clients/base.py``: connection problems, timeouts and 5xx
raise a TransientError (the batch is not acknowledged, the marker stays); a 4xx about one record
is reported per uuid as RemoteRejected/InvalidResource with the parent's message, and so is a 5xx
about one entry of a FHIR batch whose other entries were answered (a transaction answered 500 is
sent again as that batch to find out), and a REST write answered 500 with the parent's JSON error
object. A 500 for every record of a send (more than one) is the parent in trouble: an outage.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import orjson

from fhirsync.categories import FHIR_BASE, ORIGIN_HEADER, REST_BASE, Category, is_valid_id
from fhirsync.clients.base import OutgoingChange, SendResult
from fhirsync.clients.http import make_http_client, translated
from fhirsync.clients.rest import if_match
from fhirsync.errors import (
    FhirsyncError,
    Forbidden,
    InvalidResource,
    ParentNotFound,
    PayloadTooLarge,
    RecordError,
    RemoteRejected,
    RequestError,
    ServerUnavailable,
    TransientError,
    Unauthenticated,
)

FHIR_JSON = "application/fhir+json"
_GONE_OK = (404, 410)
"""A delete the parent answers with 404/410 found nothing left to void: the change is done."""
_RESTORE_FLAGS = {"UNRETIRED": "retired", "UNVOIDED": "voided"}
"""REST: the representation flag an undo sets to false (``sync.push_batch`` picks the action)."""


class RawBody(Mapping[str, Any]):
    """A FHIR body as stored: canonical JSON bytes whose ``id`` is the record's uuid.

    The FHIR sender splices the bytes into the Bundle, so a pushed body is neither parsed nor
    serialised again on the way out; anything else that reads it as a Mapping parses it then.
    """

    __slots__ = ("_entry", "_value", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._value: dict[str, Any] | None = None
        self._entry: tuple[tuple[str, str, str | None], bytes | None] | None = None

    def entry(self, fhir_type: str, uuid: str, base_version: str | None) -> bytes | None:
        """The Bundle entry that PUTs this body as ``{fhir_type}/{uuid}`` (If-Match the base),
        as JSON bytes with the body spliced in; None when the stored id is not ``uuid``.

        Kept once made: the push engine makes it while it prepares a batch, so the thread that
        sends the batch (waiting for the parent's answer to the one before) only joins bytes.
        """
        key = (fhir_type, uuid, base_version)
        if self._entry is None or self._entry[0] != key:
            self._entry = (key, _spliced(self.raw, fhir_type, uuid, base_version))
        return self._entry[1]

    def _parsed(self) -> dict[str, Any]:
        if self._value is None:
            self._value = cast(dict[str, Any], orjson.loads(self.raw))
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._parsed()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())


class HttpPushSender:
    """Sends batches of one category to the parent (``sync.push.Sender``)."""

    def __init__(
        self,
        parent_url: str,
        auth: tuple[str, str] | None,
        *,
        connect_timeout: float = 15.0,
        read_timeout: float = 60.0,
        ca_file: Path | None = None,
    ) -> None:
        self.parent_url = parent_url.rstrip("/")
        # The same client as pull's (``clients.http``): proxy variables ignored, no redirects.
        self._http = make_http_client(
            self.parent_url,
            auth,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            ca_file=ca_file,
        )
        self._greeting: threading.Thread | None = None
        self._unreachable: TransientError | None = None

    def greet(self) -> None:
        """Start an authenticated request to the parent in the background.

        The parent verifies a password with argon2 (about 16 ms) on the first request of a
        session; greeting it while the first batch is read locally takes that off the run's
        time. The first :meth:`send` waits for the greeting, so the parent verifies once. A
        parent the greeting could not reach (refused, timed out) fails that send at once with
        the same error, rather than after a second wait, and so does a URL with no sync parent
        behind it (404: :class:`~fhirsync.errors.ParentNotFound`); any other outcome is left for
        the send to meet and report.
        """
        self._greeting = threading.Thread(target=self._greet, name="push-greet", daemon=True)
        self._greeting.start()

    def _greet(self) -> None:
        try:
            response = self._request("GET", f"{FHIR_BASE}/metadata")
        except TransientError as exc:
            self._unreachable = exc
            return
        except FhirsyncError:
            return  # e.g. an unusable answer: the first send meets it again and reports it
        if response.status_code == 404:
            # Without this, every pushed record would be refused one by one and parked.
            self._unreachable = ParentNotFound(
                f"{self.parent_url}{FHIR_BASE}/metadata answered 404: there is no sync parent "
                f"at {self.parent_url} (check general.parentFeedLocation)"
            )

    def _join_greeting(self) -> None:
        greeting, self._greeting = self._greeting, None
        if greeting is not None:
            greeting.join()

    def _greeted(self) -> None:
        self._join_greeting()
        unreachable, self._unreachable = self._unreachable, None
        if unreachable is not None:
            raise unreachable

    def close(self) -> None:
        """Release the connection pool (after the greeting, whatever it met)."""
        self._join_greeting()
        self._http.close()

    def send(
        self,
        category: Category,
        changes: Sequence[OutgoingChange],
        *,
        origin: str,
        preferred: str | None = None,
        in_order: bool = False,
    ) -> SendResult:
        """Write ``changes`` to the parent as coming from ``origin``.

        ``in_order``: stop at the first change the parent refuses for another reason than a
        stale base (412), and leave the changes after it unsent (``continue_on_failure`` off).
        """
        self._greeted()
        use_fhir = category.is_fhir and (preferred in (None, "fhir") or not category.rest_resource)
        if use_fhir:
            return self._send_fhir(category, changes, origin, in_order)
        if category.rest_resource is None:
            raise RequestError(f"category {category.name!r} has no transport to send it with")
        return self._send_rest(category, changes, origin, in_order)

    # --- FHIR -------------------------------------------------------------------------------

    def _send_fhir(
        self, category: Category, changes: Sequence[OutgoingChange], origin: str, in_order: bool
    ) -> SendResult:
        """A transaction first (one parent transaction for the whole batch: the fast path);
        if the parent refuses it because of one entry, the same changes again as a batch, which
        the parent answers entry by entry, so one bad record cannot hold back the others (or,
        ``in_order``, the changes before the first bad one, found by halving)."""
        assert category.fhir_type is not None
        entries = [_entry_bytes(category.fhir_type, change) for change in changes]
        response = self._post_bundle("transaction", entries, origin)
        if response.status_code < 300:
            return _transacted(changes, response)
        _check_refusal(response)
        if in_order:
            named = _named_entry(response, len(changes))
            return self._send_fhir_in_order(category, changes, entries, origin, named)
        return self._send_fhir_batch(category, changes, entries, origin)

    def _send_fhir_in_order(
        self,
        category: Category,
        changes: Sequence[OutgoingChange],
        entries: list[bytes],
        origin: str,
        named: int | None,
    ) -> SendResult:
        """After a refused transaction: transactions of the changes before the entry the
        parent named in its refusal (``named``; else of ever shorter runs, halved while refused)
        until one entry is left, which goes alone as a batch for its own answer; stops at the
        first refused for another reason than a stale base (412).

        A batch would have written every entry after the bad one too, where an administrator
        who turned ``continue_on_failure`` off expects nothing after it to reach the parent (an
        encounter after its refused patient). A transaction writes all of its entries or none,
        so a wrong or missing name costs requests, never order.
        """
        result = SendResult()
        # [start, refused) was refused as a transaction; None: the rest is untried.
        start = 0
        refused: int | None = len(changes)
        while start < len(changes):
            if refused is not None and named == start:
                refused = start + 1
            if refused is not None and refused - start == 1:
                one = slice(start, refused)
                part = self._send_fhir_batch(category, changes[one], entries[one], origin)
                absorb(result, part)
                if stops(part, changes[one]):
                    self._check_serving(result, f"{FHIR_BASE}/{category.fhir_type}", "_count")
                    return result  # the changes after it stay unsent
                start, refused, named = refused, None, None
                continue
            if refused is None:
                end = len(changes)
            elif named is not None and start < named < refused:
                end = named
            else:
                end = start + (refused - start) // 2
            response = self._post_bundle("transaction", entries[start:end], origin)
            if response.status_code < 300:
                absorb(result, _transacted(changes[start:end], response))
                start = end
            else:
                _check_refusal(response)
                refused = end
                at = _named_entry(response, end - start)
                named = start + at if at is not None else None
        return result

    def _send_fhir_batch(
        self,
        category: Category,
        changes: Sequence[OutgoingChange],
        entries: list[bytes],
        origin: str,
    ) -> SendResult:
        """The changes as a batch Bundle, which the parent answers entry by entry."""
        response = self._post_bundle("batch", entries, origin)
        if response.status_code >= 400:
            raise _whole_request_error(response)
        answers = _json(response).get("entry") or []
        result = SendResult(versions=_versions(changes, answers))
        server_errors = 0
        for index, change in enumerate(changes):
            answer = answers[index] if index < len(answers) else {}
            status, message = _entry_status(answer)
            if 200 <= status < 300 or (change.state != "active" and status in _GONE_OK):
                result.sent.add(change.uuid)
            elif status == 0:
                raise ServerUnavailable(f"the parent did not answer for {change.uuid}")
            else:
                # A 5xx for one entry of an answered batch is that record's failure (retried,
                # then parked): taken for an outage, one such record stopped every push run.
                if status >= 500:
                    server_errors += 1
                result.failed[change.uuid] = _record_error(status, message, category, change.uuid)
        if server_errors == len(changes) > 1:
            # Every record at once: the parent is in trouble (its database, say), not the records.
            raise ServerUnavailable(f"the parent answered 5xx for all {len(changes)} records")
        return result

    def _post_bundle(self, kind: str, entries: list[bytes], origin: str) -> httpx.Response:
        head = orjson.dumps({"resourceType": "Bundle", "type": kind})
        return self._request(
            "POST",
            FHIR_BASE,
            content=head[:-1] + b',"entry":[' + b",".join(entries) + b"]}",
            headers={"Content-Type": FHIR_JSON, ORIGIN_HEADER: origin},
        )

    # --- REST -------------------------------------------------------------------------------

    def _send_rest(
        self, category: Category, changes: Sequence[OutgoingChange], origin: str, in_order: bool
    ) -> SendResult:
        result = SendResult()
        server_errors = 0
        base = f"{REST_BASE}/{category.rest_resource}"
        for change in changes:
            # The base this node started from: a parent that has moved past it answers 412 (a
            # conflict for the engine) instead of taking this write over its newer change.
            headers = {ORIGIN_HEADER: origin}
            if change.base_version is not None:
                headers["If-Match"] = if_match(change.base_version)
            if change.state == "active":
                body = dict(change.body or {})
                body["uuid"] = change.uuid
                if change.action in _RESTORE_FLAGS:
                    # A stored representation has no state flag, and an update without one
                    # keeps the parent's record retired or voided.
                    body[_RESTORE_FLAGS[change.action]] = False
                response = self._request(
                    "POST",
                    base,
                    content=orjson.dumps(body),
                    headers={**headers, "Content-Type": "application/json"},
                )
            else:
                params = {"purge": "true"} if change.state == "deleted" else None
                response = self._request(
                    "DELETE", f"{base}/{change.uuid}", params=params, headers=headers
                )
            status = response.status_code
            if status < 300 or (change.state != "active" and status in _GONE_OK):
                result.sent.add(change.uuid)
            elif status in (401, 403):
                raise _whole_request_error(response)
            elif status >= 500 and not _record_server_error(response):
                raise ServerUnavailable(f"the parent answered {status} for {change.uuid}")
            else:
                if status >= 500:
                    server_errors += 1
                message = _rest_message(response)
                result.failed[change.uuid] = _record_error(status, message, category, change.uuid)
                if in_order and stops(result, [change]):
                    self._check_serving(result, base, "limit")
                    break  # the changes after it stay unsent
        if server_errors == len(changes) > 1:
            # Every record at once: the parent is in trouble (its database, say), not the records.
            raise ServerUnavailable(f"the parent answered 500 for all {len(changes)} records")
        return result

    def _check_serving(self, result: SendResult, path: str, limit: str) -> None:
        """ServerUnavailable when a send in order stopped at a record answered 5xx, nothing of
        it was written, and the parent cannot answer a read of ``path`` either.

        Sent out of order, a parent in trouble answers 5xx for every record and the send says
        so (an outage: the marker stays). In order, the first record alone is answered, and
        taken for that record's failure it was parked while the parent was down.
        """
        server_error = any(
            isinstance(e, RemoteRejected) and e.status >= 500 for e in result.failed.values()
        )
        if not server_error or result.sent:
            return
        response = self._request("GET", path, params={limit: "1"})
        if response.status_code >= 500:
            raise ServerUnavailable(
                f"the parent answered {response.status_code} to writes and to a read of {path}"
            )

    # --- plumbing ---------------------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        written = getattr(_on_written, "callback", None)
        if written is not None:
            kwargs["extensions"] = {"trace": _body_written(written)}
        # The one translation of httpx failures into fhirsync errors (``clients.http``).
        with translated(self.parent_url):
            return self._http.request(method, url, **kwargs)


_on_written = threading.local()


@contextmanager
def signalling_written(callback: Callable[[], None]) -> Iterator[None]:
    """Within this block, on this thread, ``callback`` is called as soon as each request to the
    parent (a Bundle, or a REST write) is written to its socket, before its answer is awaited.

    The push engine's main thread waits for that before it settles the batch before: a thread
    busy with Python delays the sending thread's hold on the interpreter lock, while the parent,
    the run's bottleneck, waits for the Bundle.
    """
    _on_written.callback = callback
    try:
        yield
    finally:
        _on_written.callback = None


def _body_written(callback: Callable[[], None]) -> Callable[[str, dict[str, Any]], None]:
    def trace(event: str, _info: dict[str, Any]) -> None:
        if event in ("http11.send_request_body.complete", "http11.send_request_body.failed"):
            callback()

    return trace


def _entry_bytes(fhir_type: str, change: OutgoingChange) -> bytes:
    """One Bundle entry as JSON bytes; a stored body (its id already the uuid) goes as it is."""
    body = change.body
    if change.state == "active" and isinstance(body, RawBody):
        entry = body.entry(fhir_type, change.uuid, change.base_version)
        if entry is not None:
            return entry
    return orjson.dumps(_bundle_entry(fhir_type, change))


def _spliced(raw: bytes, fhir_type: str, uuid: str, base_version: str | None) -> bytes | None:
    """The PUT entry around stored bytes ``raw`` whose top-level id is ``uuid``, else None."""
    if b'"id":"' + uuid.encode() + b'"' not in raw:
        return None
    request = orjson.dumps(_put_request(fhir_type, uuid, base_version))
    return b'{"resource":' + raw + b',"request":' + request + b"}"


def _put_request(fhir_type: str, uuid: str, base_version: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "PUT", "url": f"{fhir_type}/{uuid}"}
    if base_version is not None:
        # The parent refuses a stale base with 412: the child handles it as a conflict.
        request["ifMatch"] = f'W/"{base_version}"'
    return request


def _bundle_entry(fhir_type: str, change: OutgoingChange) -> dict[str, Any]:
    url = f"{fhir_type}/{change.uuid}"
    if change.state == "active":
        body = dict(change.body or {})
        body["id"] = change.uuid
        return {
            "resource": body,
            "request": _put_request(fhir_type, change.uuid, change.base_version),
        }
    request = {"method": "DELETE", "url": url}
    if change.base_version is not None:
        # A void against an edit the parent made since the base is a conflict too, not a silent
        # void of that edit (the parent answers 412 and the child merges as for an update).
        request["ifMatch"] = f'W/"{change.base_version}"'
    return {"request": request}


def _versions(changes: Sequence[OutgoingChange], answers: list[Any]) -> dict[str, str]:
    """uuid → the parent's versionId from each answered entry's ETag (``W/"5"``).

    A tag that is no FHIR id (at most 64 characters) is left out, as if none came: it is kept
    as the base version of the next push, where PostgreSQL refused a longer one (the whole push
    page failed to commit, and was sent again at every run).
    """
    out: dict[str, str] = {}
    for change, answer in zip(changes, answers, strict=False):
        response = answer.get("response") if isinstance(answer, Mapping) else None
        tag = response.get("etag") if isinstance(response, Mapping) else None
        version = tag.removeprefix("W/").strip('"') if isinstance(tag, str) else ""
        if is_valid_id(version):
            out[change.uuid] = version
    return out


def absorb(result: SendResult, part: SendResult) -> None:
    """Add what ``part`` (a later request of the same send) achieved to ``result``."""
    result.sent |= part.sent
    result.failed.update(part.failed)
    result.versions.update(part.versions)


def is_stale(error: RecordError) -> bool:
    """True for the parent's 412: its record changed since the base sent (a conflict to decide,
    not a failure)."""
    return isinstance(error, RemoteRejected) and error.status == 412


def stops(part: SendResult, changes: Sequence[OutgoingChange]) -> bool:
    """True when one of ``changes`` (sent in order) was refused for another reason than a stale
    base, or not acknowledged: in order, nothing after it may be sent."""
    for change in changes:
        error = part.failed.get(change.uuid)
        if (error is not None and not is_stale(error)) or (
            error is None and change.uuid not in part.sent
        ):
            return True
    return False


def _transacted(changes: Sequence[OutgoingChange], response: httpx.Response) -> SendResult:
    """The outcome of a transaction the parent committed: every change sent."""
    answers = _json(response).get("entry") or []
    return SendResult(
        sent={change.uuid for change in changes}, versions=_versions(changes, answers)
    )


def _check_refusal(response: httpx.Response) -> None:
    """Raise for a refused transaction that is not about its entries.

    A 500 may be one entry's unexpected exception (OpenMRS's answer to many bodies it cannot
    handle): a batch tells. Other 5xx (a gateway, an overloaded parent) are not.
    """
    if response.status_code in (401, 403, 413) or response.status_code > 500:
        raise _whole_request_error(response)


_ENTRY_NAME = re.compile(r"Bundle\.entry\[(\d+)\]")


def _named_entry(response: httpx.Response, count: int) -> int | None:
    """The index of the entry a refused transaction's OperationOutcome names (a fhirsync
    parent names it in ``expression`` and the diagnostics, ``Bundle.entry[3]``), or None."""
    try:
        outcome = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    first = issues[0] if isinstance(issues, list) and issues else None
    if not isinstance(first, dict):
        return None
    where = first.get("expression")
    texts = [*(where if isinstance(where, list) else []), first.get("diagnostics")]
    for text in texts:
        found = _ENTRY_NAME.match(text) if isinstance(text, str) else None
        if found is not None and int(found.group(1)) < count:
            return int(found.group(1))
    return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise ServerUnavailable("the parent answered with a body that is not JSON") from exc
    if not isinstance(value, dict):
        raise ServerUnavailable("the parent answered with an unexpected body")
    return value


def _entry_status(answer: Mapping[str, Any]) -> tuple[int, str]:
    response = answer.get("response") or {}
    line = str(response.get("status", "0"))
    code = line.split(" ", 1)[0]
    status = int(code) if code.isascii() and code.isdigit() else 0  # "²" is a digit to isdigit
    outcome = response.get("outcome") or {}
    issues = outcome.get("issue") or [{}]
    first = issues[0] if isinstance(issues, list) and issues else {}
    message = str(first.get("diagnostics") or line)
    where = first.get("expression")
    if isinstance(where, list) and where:
        message += f" (at {where[0]})"
    return status, message


def _rest_message(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return f"HTTP {response.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        field = f" (field {error['field']})" if error.get("field") else ""
        return f"{error.get('message', 'rejected')}{field}"
    return f"HTTP {response.status_code}"


def _record_server_error(response: httpx.Response) -> bool:
    """True for a REST write answered 500 with the parent's own JSON error object: an
    unexpected exception about this record (OpenMRS's answer to many bodies it cannot handle;
    a fhirsync parent's too), retried and then parked like any refusal. Taken for an outage, one
    such record stopped every push run. A gateway's 502/503/504, a parent that says it is busy
    (503), and a 500 without that object (a proxy's page) stay an outage."""
    if response.status_code != 500:
        return False
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


def _record_error(status: int, message: str, category: Category, uuid: str) -> RecordError:
    if status == 400:
        return InvalidResource(
            f"the parent rejected the record: {message}", category=category.name, uuid=uuid
        )
    return RemoteRejected(
        f"the parent answered {status}: {message}",
        status=status,
        category=category.name,
        uuid=uuid,
    )


def _whole_request_error(response: httpx.Response) -> Exception:
    status = response.status_code
    if status == 401:
        return Unauthenticated("the parent refused this node's credentials (401)")
    if status == 403:
        return Forbidden(f"the parent refused this node (403): {_rest_message(response)}")
    if status == 413:
        return PayloadTooLarge("the parent refused the batch as too large (413)")
    if status >= 500:
        return ServerUnavailable(f"the parent answered {status}")
    return RequestError(f"the parent refused the batch ({status})")
