"""A parent's 5xx about one pushed record is that record's failure, not an outage.

OpenMRS's FHIR module answers 500 for many bodies it cannot handle (an unexpected exception in
one entry): a transaction fails as a whole, and a batch reports that entry alone. Taken for an
unreachable parent, one such record stopped every push run (every category) for good and never
became a failure an administrator could see, retry or dismiss.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import orjson
import pytest

from fhirsync import categories as cats
from fhirsync.clients.base import OutgoingChange
from fhirsync.clients.push_http import HttpPushSender
from fhirsync.errors import RemoteRejected, ServerUnavailable
from fhirsync.testing.stub_http import QuietHandler, serving

POISON = "p-poison"


class _Parent(QuietHandler):
    """Answers a transaction with ``transaction_status``; a batch entry by entry, with 500 for
    the ids in ``broken``."""

    transaction_status: ClassVar[int] = 500
    broken: ClassVar[set[str]] = {POISON}
    kinds: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        posted = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).kinds.append(posted["type"])
        if posted["type"] == "transaction":
            outcome = {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "NPE"}]}
            self.answer(self.transaction_status, orjson.dumps(outcome), "application/fhir+json")
            return
        answers: list[dict[str, Any]] = []
        for entry in posted["entry"]:
            if entry["resource"]["id"] in self.broken:
                issue = {"diagnostics": "java.lang.NullPointerException"}
                outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
                answers.append({"response": {"status": "500", "outcome": outcome}})
            else:
                answers.append({"response": {"status": "201 Created"}})
        body = {"resourceType": "Bundle", "type": "batch-response", "entry": answers}
        self.answer(200, orjson.dumps(body), "application/fhir+json")


@pytest.fixture
def port() -> Iterator[int]:
    _Parent.transaction_status, _Parent.broken, _Parent.kinds = 500, {POISON}, []
    with serving(_Parent) as server:
        yield server.server_address[1]


def _send(port: int, ids: list[str]) -> Any:
    changes = [
        OutgoingChange("patient", i, "UPDATED", {"resourceType": "Patient", "id": i}, "active")
        for i in ids
    ]
    sender = HttpPushSender(f"http://127.0.0.1:{port}", None)
    try:
        return sender.send(cats.get("patient"), changes, origin="child-a")
    finally:
        sender.close()


def test_a_500_for_one_entry_fails_that_record_and_the_others_are_sent(port: int) -> None:
    result = _send(port, ["p-1", POISON, "p-2"])
    assert _Parent.kinds == ["transaction", "batch"]
    assert result.sent == {"p-1", "p-2"}
    error = result.failed[POISON]
    assert isinstance(error, RemoteRejected) and error.status == 500
    assert "NullPointerException" in str(error)


def test_a_record_retried_alone_that_gets_500_fails_as_a_record(port: int) -> None:
    result = _send(port, [POISON])
    assert result.sent == set()
    assert isinstance(result.failed[POISON], RemoteRejected)


def test_every_entry_answered_500_is_the_parent_in_trouble(port: int) -> None:
    _Parent.broken = {"p-1", "p-2"}
    with pytest.raises(ServerUnavailable):
        _send(port, ["p-1", "p-2"])


def test_a_gateway_error_is_an_outage_without_a_second_request(port: int) -> None:
    _Parent.transaction_status = 503
    with pytest.raises(ServerUnavailable):
        _send(port, ["p-1", POISON])
    assert _Parent.kinds == ["transaction"]
