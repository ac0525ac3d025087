"""The parent's version of each pushed record, read from its answer's ETag, is kept only when it
is a FHIR id: the store keeps it as the next push's base (agreed.parent_version, 64 characters)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from fhirsync import categories as cats
from fhirsync.clients.base import OutgoingChange
from fhirsync.clients.push_http import HttpPushSender
from fhirsync.testing.stub_http import QuietHandler, serving

TAGS = ['W/"7"', 'W/"' + "v" * 65 + '"', "", 'W/"a b"']


class _Parent(QuietHandler):
    def do_POST(self) -> None:
        posted = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answers = [
            {"response": {"status": "200 OK", "etag": tag}}
            for tag, _entry in zip(TAGS, posted["entry"], strict=True)
        ]
        body = {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}
        self.answer(200, orjson.dumps(body), "application/fhir+json")


@pytest.fixture
def port() -> Iterator[int]:
    with serving(_Parent) as server:
        yield server.server_address[1]


def test_only_versions_that_are_fhir_ids_are_kept(port: int) -> None:
    changes = [
        OutgoingChange(
            "patient", f"p-{n}", "UPDATED", {"resourceType": "Patient", "id": f"p-{n}"}, "active"
        )
        for n in range(len(TAGS))
    ]
    sender = HttpPushSender(f"http://127.0.0.1:{port}", None)
    try:
        result = sender.send(cats.get("patient"), changes, origin="child-a")
    finally:
        sender.close()
    assert result.sent == {c.uuid for c in changes}
    assert result.versions == {"p-0": "7"}
