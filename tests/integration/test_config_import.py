"""Importing a sync2.json file as editors on an administrator's desk save it."""

from __future__ import annotations

import codecs
import json
import re

from tests.integration.api_support import admin_pages, csrf_token

from fhirsync.testing.servers import NodeHandle


def _import(node: NodeHandle, content: bytes) -> tuple[int, str]:
    with admin_pages(node) as client:
        token = csrf_token(client.get("/sync2/config").text)
        answer = client.post(
            "/sync2/config/import",
            data={"csrf_token": token},
            files={"file": ("sync2.json", content, "application/json")},
        )
        shown = answer.text
        if answer.status_code == 303:
            shown = client.get(answer.headers["location"]).text
    return answer.status_code, shown


def test_a_file_saved_with_a_byte_order_mark_is_imported(node: NodeHandle) -> None:
    # Windows editors (Notepad) put a UTF-8 byte order mark in front: the import refused the
    # file with "Unexpected UTF-8 BOM (decode using utf-8-sig)".
    path = node.node_dir / "sync2.json"
    data = json.loads(path.read_text())
    data["pull"]["schedule"] = 777
    status, shown = _import(node, codecs.BOM_UTF8 + json.dumps(data).encode())
    assert status == 303, shown
    assert "Configuration imported" in shown
    assert json.loads(path.read_text())["pull"]["schedule"] == 777


def test_a_utf16_file_is_named_as_such(node: NodeHandle) -> None:
    before = (node.node_dir / "sync2.json").read_bytes()
    status, shown = _import(node, before.decode().encode("utf-16"))
    assert status == 400
    alert = re.sub(r"\s+", " ", shown)
    assert "UTF-16" in alert and "save it as UTF-8" in alert
    assert (node.node_dir / "sync2.json").read_bytes() == before
