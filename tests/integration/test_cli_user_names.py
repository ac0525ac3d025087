"""`fhirsync user` with the names an administrator may type: refused when no login could use
them, shown exactly as stored otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.integration.cli_support import fhirsync, init_node
from typer.testing import Result


@pytest.fixture(scope="module")
def made_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_node(tmp_path_factory.mktemp("made") / "node")


@pytest.fixture
def node(made_node: Path, tmp_path: Path) -> str:
    return str(shutil.copytree(made_node, tmp_path / "node"))


def add(node: str, name: str) -> Result:
    return fhirsync("user", "add", node, name, "--role", "admin", "--password", "long-pw-2")


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("", "must not be blank"),
        ("   ", "must not be blank"),
        (" admin2", "spaces"),
        ("ops:night", "':'"),
        ("tab\there", "control"),
    ],
)
def test_a_name_no_login_can_use_is_refused(node: str, name: str, said: str) -> None:
    # HTTP Basic splits "name:password" at the first colon; a blank or padded name is an
    # account nobody can tell apart in `user list` (an empty ${NAME} in a script made an admin).
    result = add(node, name)
    assert result.exit_code == 2, result.output
    assert said in result.stderr
    listed = fhirsync("user", "list", node)
    assert listed.exit_code == 0 and listed.stdout.count("\n│ ") == 1, listed.stdout  # admin only


@pytest.mark.parametrize("name", ["josé", "Night Shift", "ops[/]", "[bold]x[/bold]"])
def test_unusual_names_are_shown_as_typed(node: str, name: str) -> None:
    added = add(node, name)
    assert added.exit_code == 0, added.output
    assert f"user {name}" in added.stdout
    listed = fhirsync("user", "list", node)
    assert listed.exit_code == 0, listed.output
    assert f"│ {name} " in listed.stdout
    removed = fhirsync("user", "remove", node, name)
    assert removed.exit_code == 0 and f"user {name}" in removed.stdout, removed.output
