"""HttpPushSender tells the push engine when a Bundle is on the wire, before its answer.

The "parent" is a real HTTP server on 127.0.0.1 (stdlib ``http.server``) that reads the whole
Bundle, then waits before it answers, so the moment the body was written and the moment the
answer came are far apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import orjson
import pytest

from fhirsync import categories as cats
from fhirsync.clients.base import OutgoingChange
from fhirsync.clients.push_http import HttpPushSender, signalling_written
from fhirsync.testing.stub_http import QuietHandler, serving

ANSWER_DELAY = 0.6


class _SlowParent(QuietHandler):
    received: list[float]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        posted = orjson.loads(self.rfile.read(length))
        self.received.append(time.monotonic())
        time.sleep(ANSWER_DELAY)
        if posted.get("resourceType") == "Bundle":
            answers = [{"response": {"status": "200 OK", "etag": 'W/"1"'}} for _ in posted["entry"]]
            body = orjson.dumps(
                {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}
            )
        else:  # a REST write: the representation back
            body = orjson.dumps(posted)
        self.answer(200, body, "application/fhir+json")


@pytest.fixture
def parent() -> Iterator[tuple[int, list[float]]]:
    received: list[float] = []
    handler = type("Handler", (_SlowParent,), {"received": received})
    with serving(handler) as server:
        yield server.server_address[1], received


def _changes(count: int) -> list[OutgoingChange]:
    return [
        OutgoingChange(
            "patient",
            f"p-{n}",
            "UPDATED",
            {"resourceType": "Patient", "id": f"p-{n}", "gender": "female"},
            "active",
        )
        for n in range(count)
    ]


def test_the_callback_comes_when_the_bundle_is_written_not_when_it_is_answered(
    parent: tuple[int, list[float]],
) -> None:
    port, received = parent
    written: list[float] = []
    sender = HttpPushSender(f"http://127.0.0.1:{port}", None)
    try:
        with signalling_written(lambda: written.append(time.monotonic())):
            result = sender.send(cats.get("patient"), _changes(3), origin="child-a")
        answered = time.monotonic()
    finally:
        sender.close()
    assert result.sent == {"p-0", "p-1", "p-2"}
    assert len(written) == 1 and len(received) == 1
    # Written before the parent had even finished reading it, and long before the answer.
    assert written[0] <= received[0] + 0.05
    assert answered - written[0] >= ANSWER_DELAY * 0.9


def test_each_rest_write_is_signalled_before_its_answer(
    parent: tuple[int, list[float]],
) -> None:
    port, received = parent
    written: list[float] = []
    changes = [
        OutgoingChange("visittype", f"v-{n}", "UPDATED", {"name": f"Visit {n}"}, "active")
        for n in range(2)
    ]
    sender = HttpPushSender(f"http://127.0.0.1:{port}", None)
    try:
        with signalling_written(lambda: written.append(time.monotonic())):
            result = sender.send(cats.get("visittype"), changes, origin="child-a")
    finally:
        sender.close()
    assert result.sent == {"v-0", "v-1"}
    assert len(written) == 2 and len(received) == 2
    # The second request was written after the first was answered, each before its own answer.
    assert written[0] <= received[0] + 0.05
    assert received[0] + ANSWER_DELAY * 0.9 <= written[1] <= received[1] + 0.05


def test_no_callback_outside_the_block_or_on_another_thread(
    parent: tuple[int, list[float]],
) -> None:
    port, _received = parent
    written: list[str] = []
    sender = HttpPushSender(f"http://127.0.0.1:{port}", None)
    try:
        sender.send(cats.get("patient"), _changes(1), origin="child-a")
        with signalling_written(lambda: written.append("main")):
            other = threading.Thread(
                target=sender.send, args=(cats.get("patient"), _changes(1)), kwargs={"origin": "x"}
            )
            other.start()
            other.join()
        assert written == []
    finally:
        sender.close()
