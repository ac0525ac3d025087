"""Start real fhirsync nodes on free loopback ports: in a thread, or a subprocess (killable)."""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn

from fhirsync.node import init_node, open_node
from fhirsync.server.app import create_app
from fhirsync.settings import NodeConfig
from fhirsync.store.engine import Database

ADMIN_PASSWORD = "test-admin-password"


_TEST_PORTS = (20000, 32000)
"""Node ports for tests: below Linux's ephemeral range (32768-60999 by default), which bind-to-0
and outgoing connections take from. pytest-xdist worker N of K takes the N-th K-th of it."""
_next_port = itertools.count(random.randrange(1 << 20))
"""From a random place: two test runs started side by side (not as xdist workers) share the
range, and would otherwise both hand out 20000 first."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, from this process's own block.

    A node's port is chosen when it is created and bound when it starts, often seconds later.
    Ports the kernel hands out (bind to 0) come from the ephemeral range, where another test
    process, or any outgoing connection, could take the same port meanwhile: the node then fails
    to start, or worse, its handle talks to another test's node. Each pytest-xdist worker takes
    ports from a block of its own below that range, in turn, skipping any in use.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")
    block = (_TEST_PORTS[1] - _TEST_PORTS[0]) // (int(workers) if workers.isdigit() else 1)
    base = _TEST_PORTS[0] + block * (int(worker) if worker.isdigit() else 0)
    for _ in range(block):
        port = base + next(_next_port) % block
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # taken, or in TIME_WAIT after a test: the next one
                continue
            return port
    raise RuntimeError(f"no free port in {base}-{base + block - 1}")


def wait_healthy(base_url: str, timeout: float = 30.0) -> None:
    """Block until ``/health`` answers 200, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"node at {base_url} did not become healthy")


@dataclass
class NodeHandle:
    """A node directory and, while running, its server."""

    node_dir: Path
    instance_id: str
    port: int
    admin_password: str = ADMIN_PASSWORD
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _db: Database | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:{port}``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> tuple[str, str]:
        """Admin credentials for httpx."""
        return ("admin", self.admin_password)

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client for this node, authenticated as admin."""
        return httpx.Client(base_url=self.base_url, auth=self.auth, timeout=30.0, **kwargs)  # type: ignore[arg-type]

    def open(self) -> tuple[NodeConfig, Database]:
        """Load the node's configuration and open its database (closed on stop)."""
        config, db = open_node(self.node_dir)
        return config, db

    def start(self) -> NodeHandle:
        """Serve the node with uvicorn in a background thread."""
        config, db = self.open()
        self._db = db
        app = create_app(config, db)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="on",
                proxy_headers=False,  # as `fhirsync serve`: trusted_proxies decides
            )
        )
        thread = threading.Thread(target=server.run, name=f"node-{self.instance_id}", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        wait_healthy(self.base_url)
        return self

    def start_process(self, extra_env: dict[str, str] | None = None) -> NodeHandle:
        """Serve the node as a real ``fhirsync serve`` child process (so it can be SIGKILLed)."""
        env = {**os.environ, **(extra_env or {})}
        with (self.node_dir / "serve.log").open("ab") as log_file:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "fhirsync", "serve", str(self.node_dir)],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_healthy(self.base_url)
        except TimeoutError:
            self.kill()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (thread or process) gracefully."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
            self._server = self._thread = None
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._db is not None:
            self._db.dispose()
            self._db = None

    def kill(self) -> None:
        """SIGKILL the server process (no cleanup, as in a crash)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


def create_node(
    root: Path,
    instance_id: str,
    *,
    parent: NodeHandle | None = None,
    parent_user: str = "admin",
    parent_password: str | None = None,
    db_url: str | None = None,
    extra_settings: dict[str, object] | None = None,
) -> NodeHandle:
    """Initialise a node directory under ``root`` on a free port (not yet serving)."""
    port = free_port()
    node_dir = root / instance_id
    init_node(
        node_dir,
        instance_id=instance_id,
        port=port,
        parent=parent.base_url if parent else None,
        parent_user=parent_user if parent else None,
        parent_password=(parent_password or parent.admin_password) if parent else None,
        admin_password=ADMIN_PASSWORD,
        db_url=db_url,
        extra_settings=extra_settings,
    )
    return NodeHandle(node_dir=node_dir, instance_id=instance_id, port=port)
