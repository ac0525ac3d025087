"""A parent served over https with a certificate of the hospital's own (here: self-signed).

The parent is a real node served by uvicorn with TLS on 127.0.0.1; the child trusts it only
through ``parent_ca_file``.
"""

from __future__ import annotations

import json
import shutil
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from tests.conftest import NodeFactory
from tests.integration.pull_support import cli, edit_sync2, held, new_uuid, patient, pull
from tests.integration.test_push import create_patients, push

from fhirsync.server.app import create_app
from fhirsync.testing.servers import NodeHandle
from fhirsync.testing.tls import openssl_available, self_signed_certificate

pytestmark = pytest.mark.skipif(not openssl_available(), reason="needs the openssl command")


@contextmanager
def serving_https(node: NodeHandle, cert: Path, key: Path) -> Iterator[str]:
    """Serve ``node`` over https on its port; its base URL."""
    config, db = node.open()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, db),
            host="127.0.0.1",
            port=node.port,
            log_level="warning",
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the https parent never started"
        time.sleep(0.02)
    try:
        yield f"https://127.0.0.1:{node.port}"
    finally:
        server.should_exit = True
        thread.join()
        db.dispose()


def _set(node: NodeHandle, **settings: object) -> None:
    path = node.node_dir / "fhirsync.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **settings}))


def test_a_child_trusts_an_https_parent_through_parent_ca_file(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    parent = node_factory("parent", start=False)
    child = node_factory("child", parent=parent, start=False)
    uuids = [new_uuid() for _ in range(3)]
    with serving_https(parent, cert, key) as url:
        trust = ssl.create_default_context(cafile=cert)
        with httpx.Client(base_url=url, auth=parent.auth, verify=trust) as http:
            for n, uuid in enumerate(uuids):
                answer = http.put(f"/ws/fhir2/R4/Patient/{uuid}", json=patient(uuid, f"Tls{n}"))
                assert answer.status_code == 201, answer.text
        edit_sync2(child, parentFeedLocation=url)

        untrusted = pull(child)
        assert untrusted.outcome == "unreachable", untrusted
        assert untrusted.error is not None and "CERTIFICATE_VERIFY_FAILED" in untrusted.error

        shutil.copy(cert, child.node_dir / "parent-ca.pem")
        _set(child, parent_ca_file="parent-ca.pem")  # relative to the node directory
        trusted = pull(child)
        assert (trusted.outcome, trusted.applied) == ("ok", 3), trusted
        assert held(child) == held(parent)
        status = cli("status", str(child.node_dir))
        assert "parent reachable: yes" in status.stdout, status.stdout
        child.start()
        mine = create_patients(child, 1)[0]
        sent = push(child)
        assert (sent.outcome, sent.applied) == ("ok", 1), sent
    assert mine in {u for (_c, u) in held(parent)}


def test_a_missing_ca_file_is_a_configuration_error(node_factory: NodeFactory) -> None:
    parent = node_factory("parent", start=False)
    child = node_factory("child", parent=parent, start=False)
    _set(child, parent_ca_file="no-such-ca.pem")
    result = cli("pull", str(child.node_dir))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "parent_ca_file" in result.stderr and "no-such-ca.pem" in result.stderr
