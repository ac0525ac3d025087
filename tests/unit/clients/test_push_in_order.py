"""Sending in order (``continue_on_failure`` off): nothing after the first refused record is
written, a stale base (412) does not count as refused, and the parent is asked few times."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import orjson
import pytest

from fhirsync import categories as cats
from fhirsync.clients.base import OutgoingChange, SendResult
from fhirsync.clients.push_http import HttpPushSender
from fhirsync.errors import ServerUnavailable
from fhirsync.testing.stub_http import QuietHandler, serving


class _Parent(QuietHandler):
    """A parent that refuses with ``refusals[id]`` a transaction holding that id (writing none of
    it), answers a batch entry by entry, and keeps the ids it wrote."""

    refusals: ClassVar[dict[str, int]] = {}
    written: ClassVar[list[str]] = []
    requests: ClassVar[int] = 0
    read_status: ClassVar[int] = 200
    names: ClassVar[str] = ""
    """Which refused entry the OperationOutcome names: "first" (as a fhirsync parent), "last"
    (a transaction that met a later one first), or none."""

    def do_GET(self) -> None:
        body = {"resourceType": "Bundle", "type": "searchset", "entry": []}
        self.answer(self.read_status, orjson.dumps(body), "application/fhir+json")

    def do_POST(self) -> None:
        type(self).requests += 1
        posted = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = [e["resource"]["id"] for e in posted["entry"]]
        if posted["type"] == "transaction":
            refused = [(n, self.refusals[i]) for n, i in enumerate(ids) if i in self.refusals]
            if refused:
                at, status = refused[-1] if self.names == "last" else refused[0]
                issue = {"expression": [f"Bundle.entry[{at}].request"]} if self.names else {}
                outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
                self.answer(status, orjson.dumps(outcome), "application/fhir+json")
                return
            self.written.extend(ids)
            answers = [{"response": {"status": "200 OK", "etag": 'W/"2"'}} for _ in ids]
        else:
            answers = []
            for i in ids:
                status = self.refusals.get(i, 200)
                if status == 200:
                    self.written.append(i)
                answers.append({"response": {"status": str(status)}})
        body = {"resourceType": "Bundle", "type": f"{posted['type']}-response", "entry": answers}
        self.answer(200, orjson.dumps(body), "application/fhir+json")


@pytest.fixture
def port() -> Iterator[int]:
    _Parent.refusals, _Parent.written, _Parent.requests, _Parent.read_status = {}, [], 0, 200
    _Parent.names = ""
    with serving(_Parent) as server:
        yield server.server_address[1]


def _send(port: int, ids: list[str], *, in_order: bool) -> SendResult:
    changes = [
        OutgoingChange("patient", i, "UPDATED", {"resourceType": "Patient", "id": i}, "active")
        for i in ids
    ]
    sender = HttpPushSender(f"http://127.0.0.1:{port}", None)
    try:
        return sender.send(cats.get("patient"), changes, origin="child-a", in_order=in_order)
    finally:
        sender.close()


IDS = [f"p-{n:02}" for n in range(40)]


def test_in_order_writes_what_precedes_the_refused_record_and_nothing_after(port: int) -> None:
    _Parent.refusals = {"p-25": 400, "p-30": 400}
    result = _send(port, IDS, in_order=True)
    assert _Parent.written == IDS[:25]
    assert result.sent == set(IDS[:25])
    assert set(result.failed) == {"p-25"}
    assert _Parent.requests <= 2 * 6 + 1  # halving, not one request per record


@pytest.mark.parametrize("names", ["", "first", "last"])
def test_in_order_goes_past_a_stale_base(port: int, names: str) -> None:
    _Parent.names = names
    _Parent.refusals = {"p-05": 412, "p-30": 400}
    result = _send(port, IDS, in_order=True)
    assert _Parent.written == [i for i in IDS[:30] if i != "p-05"]
    assert set(result.failed) == {"p-05", "p-30"}


def test_in_order_the_entry_a_refusal_names_is_tried_alone_at_once(port: int) -> None:
    # The whole, what precedes the named entry, the entry alone: three requests, not halving.
    _Parent.names = "first"
    _Parent.refusals = {"p-25": 400}
    result = _send(port, IDS, in_order=True)
    assert (_Parent.written, set(result.failed), _Parent.requests) == (IDS[:25], {"p-25"}, 3)


def test_in_order_a_wrong_name_costs_requests_not_order(port: int) -> None:
    # A transaction may fail first at a later entry than the first bad one (it applies
    # DELETEs first): the run before the named entry is then refused too, and halved.
    _Parent.names = "last"
    _Parent.refusals = {"p-10": 400, "p-20": 400}
    result = _send(port, IDS, in_order=True)
    assert (_Parent.written, set(result.failed)) == (IDS[:10], {"p-10"})


def test_without_order_a_refused_record_holds_back_nothing(port: int) -> None:
    _Parent.refusals = {"p-25": 400}
    result = _send(port, IDS, in_order=False)
    assert set(_Parent.written) == set(IDS) - {"p-25"}
    assert set(result.failed) == {"p-25"}


def test_in_order_with_nothing_refused_is_one_transaction(port: int) -> None:
    assert _send(port, IDS, in_order=True).sent == set(IDS)
    assert _Parent.requests == 1


def test_in_order_a_500_for_the_first_record_of_a_parent_that_reads_fine_is_that_records(
    port: int,
) -> None:
    _Parent.refusals = {"p-00": 500}
    result = _send(port, IDS, in_order=True)
    assert (result.sent, set(result.failed)) == (set(), {"p-00"})


def test_in_order_500s_from_a_parent_that_cannot_read_either_are_an_outage(port: int) -> None:
    # Sent out of order, every entry of the batch answered 500 and told so; in order, the first
    # one alone does: a read that fails too says it is the parent, not the record.
    _Parent.refusals = dict.fromkeys(IDS, 500)
    _Parent.read_status = 500
    with pytest.raises(ServerUnavailable):
        _send(port, IDS, in_order=True)
