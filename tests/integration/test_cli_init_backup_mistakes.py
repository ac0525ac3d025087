"""`fhirsync init` and `fhirsync backup` given the paths and values a tired administrator types:
one line saying what is wrong, exit code 2, nothing left half made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fhirsync.cli.main import build_app


def fhirsync(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_app(), list(args))


def one_line_error(result: Result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def init(node_dir: Path, *options: str) -> Result:
    return fhirsync("init", str(node_dir), "--admin-password", "long-pw-1", *options)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node_dir = tmp_path_factory.mktemp("made") / "node"
    done = init(node_dir, "--instance-id", "n")
    assert done.exit_code == 0, done.output
    return node_dir


@pytest.mark.parametrize("where", ["a file", "inside a file"])
def test_init_where_a_file_is_says_so(tmp_path: Path, where: str) -> None:
    (tmp_path / "notes").write_text("kept")
    node_dir = tmp_path / "notes" if where == "a file" else tmp_path / "notes" / "node"
    result = init(node_dir, "--instance-id", "n")
    assert result.exit_code == 2, result.output
    assert str(node_dir) in one_line_error(result)
    assert (tmp_path / "notes").read_text() == "kept"


@pytest.mark.parametrize("instance_id", ["clinic 4é", "clinic/4", "x" * 65])
def test_init_refuses_an_instance_id_a_parent_cannot_take(tmp_path: Path, instance_id: str) -> None:
    # Pushed changes carry this id in a header and a parent's child account must match it:
    # 'clinic 4é' made every push end in a UnicodeEncodeError traceback.
    result = init(tmp_path / "n", "--instance-id", instance_id)
    assert result.exit_code == 2, result.output
    assert "letters, digits, '-' and '.'" in one_line_error(result)
    assert not (tmp_path / "n").exists()


def test_init_refuses_port_0(tmp_path: Path) -> None:
    # serve took it (a random port) and announced 'listening on http://127.0.0.1:0', the address
    # its feeds and children would then use.
    result = init(tmp_path / "n", "--instance-id", "n", "--port", "0")
    assert result.exit_code == 2, result.output
    assert "'port'" in one_line_error(result)


def test_backup_where_it_cannot_write_is_one_line(node: Path, tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("kept")
    dest = tmp_path / "notes" / "backup"
    result = fhirsync("backup", str(node), str(dest))
    assert result.exit_code == 2, result.output
    assert "notes" in one_line_error(result)
    assert (tmp_path / "notes").read_text() == "kept"


def test_backup_into_the_node_itself_is_refused(node: Path) -> None:
    # Such a copy is lost with the node, and a restore (the copy in place of NODE_DIR) eats it.
    result = fhirsync("backup", str(node), str(node / "backups" / "today"))
    assert result.exit_code == 2, result.output
    assert "inside the node directory" in one_line_error(result)
    assert not (node / "backups").exists()


@pytest.mark.parametrize(
    ("url", "wrong"),
    [
        ("postgresql+psycopg2://sync:Hunter2-pw@127.0.0.1/clinic", "driver"),
        ("postgresql+asyncpg://sync:Hunter2-pw@127.0.0.1/clinic", "driver"),
        ("postgresql+psycopg://sync:Hunter2-pw@127.0.0.1:54a2/clinic", "port"),
        ("postgresql+psycopg://sync:Hunter2-pw@[::1/clinic", "port"),
    ],
)
def test_init_with_a_database_url_it_cannot_use_is_one_line(
    tmp_path: Path, url: str, wrong: str
) -> None:
    # The settings check let any 'postgresql...' URL through: a driver that is not installed
    # ended in a ModuleNotFoundError traceback, a mistyped port in a ValueError one.
    result = init(tmp_path / "n", "--instance-id", "n", "--db", url)
    assert result.exit_code == 2, result.output
    line = one_line_error(result)
    assert "'db_url'" in line and wrong in line and "Hunter2" not in line
    assert not (tmp_path / "n").exists()


def test_init_with_a_sqlite_file_in_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    # A typo in the folder of --db ended in a FileNotFoundError traceback.
    missing = tmp_path / "no-such-folder"
    result = init(tmp_path / "n", "--instance-id", "n", "--db", f"sqlite:///{missing}/node.db")
    assert result.exit_code == 2, result.output
    line = one_line_error(result)
    assert "No such file or directory" in line and str(missing) in line, line
    assert not (tmp_path / "n").exists() and not missing.exists()


def test_a_relative_sqlite_path_names_the_file_init_made_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--db sqlite:///clinic.db` made the file in the directory init ran in, and kept the
    # relative URL: every later command run from elsewhere (a systemd unit, cron) opened
    # another file there, an empty node.
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    done = init(tmp_path / "n", "--instance-id", "n", "--db", "sqlite:///clinic.db")
    assert done.exit_code == 0, done.output
    assert (tmp_path / "here" / "clinic.db").exists()
    monkeypatch.chdir(tmp_path / "elsewhere")
    status = fhirsync("status", str(tmp_path / "n"))
    assert status.exit_code == 0, status.output
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_relative_sqlite_db_url_in_the_settings_is_relative_to_the_node_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written by hand in fhirsync.json (or given as FHIRSYNC_DB_URL), a relative SQLite path
    # was taken from the directory the command ran in: from anywhere else the node's database
    # was "missing", and a node directory moved with its database opened nothing.
    node_dir = tmp_path / "n"
    assert init(node_dir, "--instance-id", "n").exit_code == 0
    (node_dir / "data").mkdir()
    (node_dir / "fhirsync.db").rename(node_dir / "data" / "clinic.db")
    settings = node_dir / "fhirsync.json"
    settings.write_text(
        json.dumps({**json.loads(settings.read_text()), "db_url": "sqlite:///data/clinic.db"})
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    status = fhirsync("status", str(node_dir))
    assert status.exit_code == 0, status.output
    monkeypatch.setenv("FHIRSYNC_DB_URL", "sqlite:///data/clinic.db")
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "db_url": ""}))
    status = fhirsync("status", str(node_dir))
    assert status.exit_code == 0, status.output
    assert list((tmp_path / "elsewhere").iterdir()) == []
