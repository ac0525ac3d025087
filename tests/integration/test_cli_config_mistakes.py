"""Mistakes an administrator makes in a node's two settings files, as `fhirsync status` meets them:
one line naming the file and the field, exit code 2; files a Java node or Windows wrote load."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.integration.cli_support import fhirsync, init_node
from typer.testing import Result

from fhirsync.testing.servers import free_port


@pytest.fixture(scope="module")
def made_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_node(tmp_path_factory.mktemp("made") / "node")


@pytest.fixture
def node(made_node: Path, tmp_path: Path) -> Path:
    """A fresh copy of an initialised node (init hashes a password and migrates: done once)."""
    return Path(shutil.copytree(made_node, tmp_path / "node"))


def edit_sync2(node: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = node / "sync2.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def one_line_error(result: Result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_wrong_boolean_deep_in_a_class_list_names_its_path(node: Path) -> None:
    def yes(data: dict[str, Any]) -> None:
        data["pull"]["classes"][3]["enabled"] = "yes"

    edit_sync2(node, yes)
    result = fhirsync("status", str(node))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "sync2.json" in line and "pull.classes[3].enabled" in line and "'yes'" in line


def test_files_saved_by_windows_notepad_load(node: Path) -> None:
    # Notepad writes a byte order mark and CRLF line ends; OpenMRS (Jackson) reads such a file.
    for name in ("sync2.json", "fhirsync.json"):
        text = (node / name).read_text()
        (node / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    result = fhirsync("status", str(node))
    assert result.exit_code == 0, result.output
    assert "node n" in result.stdout


def test_a_parent_url_with_spaces_and_a_trailing_slash_is_the_parent(node: Path) -> None:
    port = free_port()  # nothing listens there: the parent is unreachable, not misconfigured

    def padded(data: dict[str, Any]) -> None:
        data["general"]["parentFeedLocation"] = f"  http://127.0.0.1:{port}/  "

    edit_sync2(node, padded)
    result = fhirsync("status", str(node))
    assert result.exit_code == 3, result.output
    assert f"parent http://127.0.0.1:{port}\n" in result.stdout
    assert "parent reachable: no" in result.stdout


def test_init_keeps_the_parent_url_without_spaces(tmp_path: Path) -> None:
    node = tmp_path / "child"
    done = fhirsync(
        "init", str(node), "--instance-id", "c", "--parent", " http://parent:8080/ ",
        "--admin-password", "long-pw-1",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    sync2 = json.loads((node / "sync2.json").read_text())
    assert sync2["general"]["parentFeedLocation"] == "http://parent:8080"


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("FHIRSYNC_PORT", "eighty", "valid integer"),
        ("FHIRSYNC_TRUSTED_PROXIES", "10.0.0.1", "JSON"),
        ("FHIRSYNC_CONFLICT_POLICIES", '{"patient": "mine"}', "'manual'"),
    ],
)
def test_a_bad_environment_override_names_the_variable(
    node: Path, variable: str, value: str, said: str
) -> None:
    result = fhirsync("status", str(node), env={variable: value})
    assert result.exit_code == 2, result.output
    line = one_line_error(result)
    assert f"environment variable {variable}" in line and said in line, line
    assert "fhirsync.json" not in line  # the file holds no such value: do not send them there


@pytest.mark.parametrize("damage", ["latin-1", "directory"])
def test_an_unreadable_settings_file_is_one_line(node: Path, damage: str) -> None:
    if damage == "latin-1":  # what an editor set to Windows-1252 saves
        (node / "fhirsync.json").write_bytes('{"log_level": "café"}'.encode("latin-1"))
        said = "fhirsync.json: not UTF-8 text"
    else:
        (node / "fhirsync.json").unlink()
        (node / "fhirsync.json").mkdir()
        said = "fhirsync.json: cannot be read: Is a directory"
    result = fhirsync("status", str(node))
    assert result.exit_code == 2, result.output
    assert said in one_line_error(result)


def test_a_preferred_client_that_names_no_client_is_warned_about(node: Path) -> None:
    def typo(data: dict[str, Any]) -> None:
        data["pull"]["classes"][1]["preferredClient"] = "fihr"

    edit_sync2(node, typo)
    result = fhirsync("status", str(node))
    assert result.exit_code == 0, result.output  # still a working node: it falls back
    warning = next(line for line in result.stdout.splitlines() if line.startswith("warning:"))
    assert "pull.classes[1].preferredClient 'fihr' names no client (fhir, rest)" in warning
    assert fhirsync("status", str(node)).stdout.count("warning:") == 1


def test_settings_fhirsync_does_not_use_are_named_not_silently_ignored(node: Path) -> None:
    # A Java node's own address: fhirsync reads and writes its store directly, so the value
    # does nothing, and an administrator who set it is told so (and where the address is set).
    def java_address(data: dict[str, Any]) -> None:
        data["general"]["localFeedLocation"] = "http://clinic-a:8080/openmrs"

    edit_sync2(node, java_address)
    result = fhirsync("status", str(node))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stdout
    assert "general.localFeedLocation" in warnings[0] and "base_url" in warnings[0], warnings
    # The Sync 2.0 default, and the node's own address, load without a word.
    for quiet in ("http://localhost:8080/openmrs", "http://127.0.0.1:8080"):
        edit_sync2(node, lambda data, url=quiet: data["general"].update(localFeedLocation=url))
        assert "warning:" not in fhirsync("status", str(node)).stdout, quiet

    # Keeping record bodies in the audit log is not supported: asking for it is refused (a
    # setting that said "accepted, not used yet" let an administrator believe it was on).
    settings = json.loads((node / "fhirsync.json").read_text())
    (node / "fhirsync.json").write_text(json.dumps({**settings, "audit_keep_payloads": True}))
    refused = fhirsync("status", str(node))
    assert refused.exit_code == 2, refused.output
    line = one_line_error(refused)
    assert "audit_keep_payloads" in line and "not supported" in line, line
    (node / "fhirsync.json").write_text(json.dumps({**settings, "audit_keep_payloads": False}))
    assert fhirsync("status", str(node)).exit_code == 0


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://", "name a host"),
        ("http://[::1", "not a valid URL"),
        ("http://127.0.0.1:99999", "Port out of range"),
    ],
)
def test_move_parent_to_a_bad_url_is_one_line_and_changes_nothing(
    node: Path, url: str, said: str
) -> None:
    before = (node / "sync2.json").read_text()
    result = fhirsync("move-parent", str(node), url)
    assert result.exit_code == 2, result.output
    line = one_line_error(result)
    assert "parent's URL" in line and said in line, line
    assert (node / "sync2.json").read_text() == before


def test_a_node_whose_database_file_is_gone_is_refused_not_started_empty(node: Path) -> None:
    # Deleted, or left behind by a copy of the settings files alone: every command created an
    # empty database in its place, and a parent served empty feeds to children that counted
    # what they had sent it as delivered.
    (node / "fhirsync.db").unlink()
    copy = str(node.parent / "copy")
    for command in (["status"], ["pull"], ["serve"], ["backup", copy]):
        result = fhirsync(command[0], str(node), *command[1:])
        assert result.exit_code == 2, result.output
        line = one_line_error(result)
        assert "fhirsync.db" in line and "backup" in line, line
        assert not (node / "fhirsync.db").exists()
