"""A parent's 500 about one REST record is that record's failure, not an outage.

OpenMRS answers an unexpected exception in one write (a body it cannot handle) with 500 and its
JSON error object. Taken for an unreachable parent, one such metadata record stopped every push
run for good and never became a failure an administrator could see, retry or dismiss. A gateway
(502/503/504), a 500 without the parent's error object, and a connection error remain an
outage: nothing moves the marker past the record.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from tests.integration.pull_support import edit_sync2
from tests.integration.test_push import NodeFactory, make_pair, open_failures, push, snapshot
from tests.integration.test_push_stop_on_failure import store_record

from fhirsync.testing.servers import NodeHandle
from fhirsync.testing.stub_http import QuietHandler, serving

POISON = str(uuidlib.uuid4())
OPENMRS_500 = orjson.dumps(
    {"error": {"message": "[null]", "code": "org.openmrs.module.webservices.rest.web"}}
)


class _Front(QuietHandler):
    """In front of a real parent: answers a write of ``POISON`` with ``status``/``body`` (or
    every REST request, with ``every``), and forwards everything else."""

    parent: ClassVar[str] = ""
    status: ClassVar[int] = 500
    body: ClassVar[bytes] = OPENMRS_500
    every: ClassVar[bool] = False

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        content = self.rfile.read(length) if length else b""
        front = type(self)
        rest = self.path.startswith("/ws/rest/v1/")
        writes = self.command == "POST" and rest
        # ``every``: the parent is in trouble, its REST reads fail too.
        if (rest and front.every) or (writes and orjson.loads(content).get("uuid") == POISON):
            self.answer(front.status, front.body)
            return
        skip = {"host", "content-length", "connection"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        answer = httpx.request(
            self.command, front.parent + self.path, headers=headers, content=content
        )
        self.answer(answer.status_code, answer.content, answer.headers.get("content-type", ""))

    do_GET = do_POST = do_DELETE = _forward


@pytest.fixture(params=[True, False], ids=["continue", "stop"])
def pair(
    node_factory: NodeFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[NodeHandle, NodeHandle]]:
    parent, child = make_pair(
        node_factory, record_max_attempts=2, continue_on_failure=request.param
    )
    _Front.parent, _Front.status, _Front.body, _Front.every = (
        parent.base_url,
        500,
        OPENMRS_500,
        False,
    )
    with serving(_Front) as front:
        edit_sync2(child, parentFeedLocation=f"http://127.0.0.1:{front.server_address[1]}")
        yield parent, child


def visit_types(child: NodeHandle) -> list[str]:
    """Three visit types stored on ``child``; the middle one is ``POISON``."""
    uuids = [str(uuidlib.uuid4()), POISON, str(uuidlib.uuid4())]
    for n, uuid in enumerate(uuids):
        store_record(child, "visittype", uuid, {"name": f"Type {n}", "description": "x"})
    return uuids


def test_a_500_with_the_parents_error_fails_that_record_only(
    pair: tuple[NodeHandle, NodeHandle],
) -> None:
    parent, child = pair
    first, _bad, last = visit_types(child)
    finished = push(child)
    assert (finished.outcome, finished.failures) == ("failures", 1), finished
    assert first in snapshot(parent) and POISON not in snapshot(parent)
    # With continue_on_failure off, nothing after the failed record goes up.
    config, db = child.open()
    db.dispose()
    assert (last in snapshot(parent)) == config.settings.continue_on_failure
    [failure] = open_failures(child)
    assert (failure.record_uuid, failure.status, failure.error_class) == (
        POISON,
        "retrying",
        "RemoteRejected",
    )
    assert "500" in failure.error_message
    # Retried alone, answered 500 again: parked, and visible; the feed went on.
    finished = push(child)
    assert (finished.outcome, finished.events_read) == ("failures", 0), finished
    assert [f.status for f in open_failures(child)] == ["parked"]


@pytest.mark.parametrize(
    ("status", "body"),
    [(503, OPENMRS_500), (502, b"<html>Bad Gateway</html>"), (500, b"<html>oops</html>")],
)
def test_a_gateway_or_a_bare_500_is_an_outage_and_moves_nothing(
    pair: tuple[NodeHandle, NodeHandle], status: int, body: Any
) -> None:
    parent, child = pair
    _Front.status, _Front.body = status, body
    uuids = visit_types(child)
    finished = push(child)
    assert finished.outcome == "unreachable", finished
    assert open_failures(child) == []
    _Front.status, _Front.body, _Front.every = 201, b"{}", False
    edit_sync2(child, parentFeedLocation=parent.base_url)
    finished = push(child)
    assert (finished.outcome, finished.applied) == ("ok", 3), finished
    assert set(uuids) <= set(snapshot(parent))


def test_every_record_answered_500_is_the_parent_in_trouble(
    pair: tuple[NodeHandle, NodeHandle],
) -> None:
    _parent, child = pair
    _Front.every = True
    visit_types(child)
    assert push(child).outcome == "unreachable"
    assert open_failures(child) == []
