"""`fhirsync init` / `serve` / `user add` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fhirsync.server.auth import RECHECK_SECONDS
from fhirsync.store import users
from fhirsync.testing.servers import NodeHandle, free_port


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhirsync", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_init_writes_openmrs_config_and_prints_generated_password(tmp_path: Path) -> None:
    node_dir = tmp_path / "clinic"
    result = run(
        "init",
        str(node_dir),
        "--instance-id",
        "clinic-a",
        "--port",
        "18081",
        "--parent",
        "http://parent:8080/",
        "--parent-user",
        "clinic-a",
        "--parent-password",
        "s3cret-s3cret",
    )
    assert result.returncode == 0, result.stderr
    assert "Admin password" in result.stdout
    sync2 = json.loads((node_dir / "sync2.json").read_text())
    assert sync2["general"]["localInstanceId"] == "clinic-a"
    assert sync2["general"]["parentFeedLocation"] == "http://parent:8080"
    assert {"general", "push", "pull", "whitelist"} == set(sync2)
    settings = json.loads((node_dir / "fhirsync.json").read_text())
    assert settings["port"] == 18081
    assert (node_dir / "fhirsync.db").exists()
    assert (node_dir / "fhirsync.json").stat().st_mode & 0o077 == 0


def test_init_refuses_an_existing_node_and_blank_id(tmp_path: Path) -> None:
    assert (
        run(
            "init", str(tmp_path / "n"), "--instance-id", "n", "--admin-password", "long-enough-pw"
        ).returncode
        == 0
    )
    again = run("init", str(tmp_path / "n"), "--instance-id", "n")
    assert again.returncode == 2
    assert "already holds a node" in again.stderr
    assert run("init", str(tmp_path / "m"), "--instance-id", " ").returncode == 2


def test_a_failed_init_leaves_nothing_behind_and_hides_the_database_password(
    tmp_path: Path,
) -> None:
    node_dir = tmp_path / "clinic"
    unreachable = f"postgresql+psycopg://postgres:Hunter2-pw@127.0.0.1:{free_port()}/test"
    failed = run("init", str(node_dir), "--instance-id", "c", "--db", unreachable)
    assert failed.returncode == 2
    assert "cannot open database" in failed.stderr and "postgres:***@127.0.0.1" in failed.stderr
    assert "Hunter2" not in failed.stdout + failed.stderr
    assert not node_dir.exists()
    # A weak admin password is refused before anything is written, in an existing directory too.
    node_dir.mkdir()
    (node_dir / "notes.txt").write_text("kept")
    weak = run("init", str(node_dir), "--instance-id", "c", "--admin-password", "short")
    assert weak.returncode == 2 and "at least 8 characters" in weak.stderr
    assert [p.name for p in node_dir.iterdir()] == ["notes.txt"]
    # Once the problem is fixed, init simply works.
    fixed = run("init", str(node_dir), "--instance-id", "c", "--admin-password", "long-enough-pw")
    assert fixed.returncode == 0, fixed.stderr
    assert (node_dir / "sync2.json").exists() and (node_dir / "notes.txt").read_text() == "kept"


def test_serve_refuses_an_invalid_config_and_names_the_field(tmp_path: Path) -> None:
    node_dir = tmp_path / "n"
    run("init", str(node_dir), "--instance-id", "n", "--admin-password", "long-enough-pw")
    path = node_dir / "sync2.json"
    data = json.loads(path.read_text())
    data["pull"]["schedule"] = "soon"
    path.write_text(json.dumps(data))
    result = run("serve", str(node_dir))
    assert result.returncode == 2
    assert "pull.schedule" in result.stderr


def test_serve_and_user_add(tmp_path: Path) -> None:
    port = free_port()
    node_dir = tmp_path / "n"
    assert (
        run(
            "init",
            str(node_dir),
            "--instance-id",
            "n",
            "--port",
            str(port),
            "--admin-password",
            "long-enough-pw",
        ).returncode
        == 0
    )
    added = run(
        "user", "add", str(node_dir), "clinic-b", "--role", "child", "--instance-id", "clinic-b"
    )
    assert added.returncode == 0, added.stderr
    password = added.stdout.strip().rsplit(" ", 1)[1]
    handle = NodeHandle(
        node_dir=node_dir, instance_id="n", port=port, admin_password="long-enough-pw"
    ).start_process()
    try:
        assert httpx.get(f"{handle.base_url}/health").json()["instanceId"] == "n"
        duplicate = run(
            "user", "add", str(node_dir), "clinic-b", "--role", "child", "--instance-id", "clinic-b"
        )
        assert duplicate.returncode == 2
        no_id = run("user", "add", str(node_dir), "x", "--role", "child")
        assert no_id.returncode == 2
        # The node's own id ("n") and another child's are refused for a new child account.
        for taken in ("n", "clinic-b"):
            refused = run(
                "user", "add", str(node_dir), "x", "--role", "child", "--instance-id", taken
            )
            assert refused.returncode == 2 and "instance id" in refused.stderr, refused.stderr
        assert password
    finally:
        handle.stop()


def test_user_list_password_and_remove(tmp_path: Path) -> None:
    port = free_port()
    node_dir = tmp_path / "n"
    init = ("init", str(node_dir), "--instance-id", "n", "--port", str(port))
    assert run(*init, "--admin-password", "long-enough-pw").returncode == 0
    for name in ("clinic-b", "clinic-c"):
        added = run(
            "user", "add", str(node_dir), name, "--role", "child", "--instance-id", name,
            "--password", f"{name}-first-pw",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    listed = run("user", "list", str(node_dir))
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[1]: line.split()[2:] for line in listed.stdout.splitlines() if "│" in line}
    assert rows["admin"][1] == "admin"
    assert rows["clinic-b"][1:4:2] == ["child", "clinic-b"]
    assert "first-pw" not in listed.stdout

    changed = run("user", "password", str(node_dir), "clinic-b")
    assert changed.returncode == 0, changed.stderr
    new_password = changed.stdout.strip().rsplit(" ", 1)[1]
    missing = run("user", "password", str(node_dir), "nobody", "--password", "long-enough-pw")
    assert missing.returncode == 2 and "no user 'nobody'" in missing.stderr

    handle = NodeHandle(
        node_dir=node_dir, instance_id="n", port=port, admin_password="long-enough-pw"
    ).start_process()
    try:
        url = f"{handle.base_url}/ws/atomfeed/patient/recent"
        assert httpx.get(url, auth=("clinic-b", "clinic-b-first-pw")).status_code == 401
        assert httpx.get(url, auth=("clinic-b", new_password)).status_code == 200
        # Changed and removed while the server runs, after it has verified (and remembered) the
        # credentials: refused within seconds, not after the remembered verification expires.
        assert httpx.get(url, auth=("clinic-c", "clinic-c-first-pw")).status_code == 200
        rotated = run("user", "password", str(node_dir), "clinic-b", "--password", "third-pw-b")
        assert rotated.returncode == 0, rotated.stderr
        assert _refused_soon(url, ("clinic-b", new_password))
        assert httpx.get(url, auth=("clinic-b", "third-pw-b")).status_code == 200
        removed = run("user", "remove", str(node_dir), "clinic-c")
        assert removed.returncode == 0, removed.stderr
        assert _refused_soon(url, ("clinic-c", "clinic-c-first-pw"))
    finally:
        handle.stop()
    last_admin = run("user", "remove", str(node_dir), "admin")
    assert last_admin.returncode == 2 and "last admin" in last_admin.stderr
    _config, db = handle.open()
    try:
        with db.read() as conn:
            assert [u.name for u in users.list_all(conn)] == ["admin", "clinic-b"]
    finally:
        db.dispose()


def _refused_soon(url: str, auth: tuple[str, str]) -> bool:
    """Whether ``auth`` gets 401 within a few times the server's recheck interval."""
    deadline = time.monotonic() + 5 * RECHECK_SECONDS
    while time.monotonic() < deadline:
        if httpx.get(url, auth=auth).status_code == 401:
            return True
        time.sleep(0.1)
    return False


def test_serve_on_a_port_in_use_names_the_setting_and_exits_2(tmp_path: Path) -> None:
    port = free_port()
    node_dir = tmp_path / "n"
    init = ("init", str(node_dir), "--instance-id", "n", "--port", str(port))
    assert run(*init, "--admin-password", "long-enough-pw").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        refused = run("serve", str(node_dir))
    # Not uvicorn's start-up status 3, which would read as "parent unreachable".
    assert refused.returncode == 2, refused.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in refused.stderr and "'port'" in refused.stderr


def test_a_damaged_database_is_reported_in_one_line_not_a_traceback(tmp_path: Path) -> None:
    node_dir = tmp_path / "n"
    init = ("init", str(node_dir), "--instance-id", "n", "--admin-password", "long-enough-pw")
    assert run(*init).returncode == 0
    with sqlite3.connect(node_dir / "fhirsync.db") as conn:
        conn.execute("DROP TABLE users")  # a damaged database that still opens
    damaged = run("user", "list", str(node_dir))
    assert damaged.returncode == 1, damaged.stderr
    assert "database error: no such table: users" in damaged.stderr
    assert "Traceback" not in damaged.stderr

    (node_dir / "fhirsync.db").write_bytes(b"not a database at all " * 100)
    garbage = run("status", str(node_dir))
    assert garbage.returncode == 2, garbage.stderr
    assert "cannot read database" in garbage.stderr and "fhirsync backup" in garbage.stderr
    assert "Traceback" not in garbage.stderr


def test_user_list_warns_about_child_accounts_sharing_an_instance_id(tmp_path: Path) -> None:
    node_dir = tmp_path / "n"
    init = ("init", str(node_dir), "--instance-id", "n", "--admin-password", "long-enough-pw")
    assert run(*init).returncode == 0
    added = run(
        "user", "add", str(node_dir), "ca", "--role", "child", "--instance-id", "clinic-x",
        "--password", "long-enough-1",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    clean = run("user", "list", str(node_dir))
    assert clean.returncode == 0 and "warning" not in clean.stdout
    # A second account on the same id, as an older fhirsync let one be made.
    with sqlite3.connect(node_dir / "fhirsync.db") as conn:
        conn.execute(
            "INSERT INTO users (name, password_hash, role, instance_id, created_at) "
            "SELECT 'cb', password_hash, role, instance_id, created_at FROM users WHERE name='ca'"
        )
    shared = run("user", "list", str(node_dir))
    assert shared.returncode == 0, shared.stderr
    assert "warning: child accounts ca, cb share the instance id 'clinic-x'" in shared.stdout


@pytest.mark.postgres
def test_init_into_a_database_another_node_uses_is_refused(tmp_path: Path, db_url: str) -> None:
    # A PostgreSQL server holds many databases, and a second node named the first one's. With
    # --admin-password the refusal read "user 'admin' already exists"; once the first node's
    # admin had another name, the second node was made, and both kept their records and feed
    # positions in the same tables.
    first = run("init", str(tmp_path / "a"), "--instance-id", "a", "--db", db_url,
                "--admin-password", "long-enough-pw")  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert run("user", "add", str(tmp_path / "a"), "keeper", "--role", "admin",
               "--password", "long-enough-pw").returncode == 0  # fmt: skip
    assert run("user", "remove", str(tmp_path / "a"), "admin").returncode == 0
    for password in ("--admin-password", None):
        extra = [password, "long-enough-pw"] if password else []
        second = run("init", str(tmp_path / "b"), "--instance-id", "b", "--db", db_url, *extra)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "already holds a node" in second.stderr
        assert "Traceback" not in second.stderr
        assert not (tmp_path / "b").exists()
