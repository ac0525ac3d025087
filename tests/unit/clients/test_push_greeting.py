"""HttpPushSender's greeting: one password check per run, and a parent it cannot reach fails the
first send at once instead of after a second attempt.

The "parent" here is a real TCP listener on 127.0.0.1 that counts connections and closes each
one without answering (what a crashing parent looks like to the child).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from fhirsync import categories as cats
from fhirsync.clients.base import OutgoingChange
from fhirsync.clients.push_http import HttpPushSender
from fhirsync.errors import ConnectionFailed


class _SlammingParent:
    """Accepts connections and closes them at once, counting them."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def parent() -> Iterator[_SlammingParent]:
    server = _SlammingParent()
    yield server
    server.close()


def _change() -> OutgoingChange:
    body = {"resourceType": "Patient", "id": "p-1", "gender": "male"}
    return OutgoingChange("patient", "p-1", "UPDATED", body, "active")


def test_an_unreachable_parent_fails_the_first_send_without_a_second_attempt(
    parent: _SlammingParent,
) -> None:
    sender = HttpPushSender(f"http://127.0.0.1:{parent.port}", ("child-a", "pw"))
    try:
        sender.greet()
        with pytest.raises(ConnectionFailed):
            sender.send(cats.get("patient"), [_change()], origin="child-a")
        assert parent.accepted == 1  # the greeting's connection only
        # The greeting's failure is reported once: the next send tries the parent again.
        with pytest.raises(ConnectionFailed):
            sender.send(cats.get("patient"), [_change()], origin="child-a")
        assert parent.accepted == 2
    finally:
        sender.close()


def test_closing_a_sender_waits_for_its_greeting(parent: _SlammingParent) -> None:
    sender = HttpPushSender(f"http://127.0.0.1:{parent.port}", None)
    sender.greet()
    sender.close()
    assert parent.accepted == 1
    assert not any(t.name == "push-greet" for t in threading.enumerate())
