"""The command line run in this process (typer's CliRunner), and an initialised node to copy."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from fhirsync.cli.main import build_app


def fhirsync(*args: str, env: dict[str, str] | None = None) -> Result:
    """``fhirsync ARGS`` with a wide terminal, so no message is wrapped."""
    return CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(build_app(), list(args))


def init_node(node_dir: Path) -> Path:
    """``fhirsync init`` of node ``n`` (tests copy it: init hashes a password and migrates)."""
    done = fhirsync("init", str(node_dir), "--instance-id", "n", "--admin-password", "long-pw-1")
    assert done.exit_code == 0, done.output
    return node_dir
