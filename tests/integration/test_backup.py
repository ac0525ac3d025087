"""`fhirsync backup`: a consistent copy of a serving node that can be served in its place."""

from __future__ import annotations

import json
import shutil
import threading
import uuid as uuidlib
from pathlib import Path

import httpx
from sqlalchemy import select
from tests.conftest import NodeFactory
from tests.integration.pull_support import cli, held, new_uuid, patient, pull, put
from tests.integration.test_push import create_patients, make_pair, push

from fhirsync.node import backup_node
from fhirsync.settings import RECOVERY_FILE, load_node
from fhirsync.store.tables import records
from fhirsync.testing.network import event_count
from fhirsync.testing.servers import NodeHandle, free_port

FHIR = "/ws/fhir2/R4"


def _held(node_dir: Path) -> dict[str, str]:
    handle = NodeHandle(node_dir=node_dir, instance_id="n", port=0, admin_password="")
    _config, db = handle.open()
    try:
        with db.read() as conn:
            rows = conn.execute(select(records.c.uuid, records.c.content_hash))
            return {r.uuid: r.content_hash for r in rows}
    finally:
        db.dispose()


def test_a_backup_taken_while_serving_and_writing_can_be_served_in_its_place(
    tmp_path: Path,
) -> None:
    port = free_port()
    node_dir, copy = tmp_path / "clinic", tmp_path / "backups" / "monday"
    init = ("init", str(node_dir), "--instance-id", "n", "--port", str(port))
    assert cli(*init, "--admin-password", "long-enough-pw").returncode == 0
    node = NodeHandle(node_dir, "n", port, "long-enough-pw").start_process()
    before = [str(uuidlib.uuid4()) for _ in range(30)]
    during: list[str] = []
    stop = threading.Event()

    def keep_writing() -> None:
        with node.client() as client:
            while not stop.is_set():
                uuid = str(uuidlib.uuid4())
                answer = client.put(f"{FHIR}/Patient/{uuid}", json=patient(uuid, "During"))
                assert answer.status_code == 201
                during.append(uuid)

    try:
        with node.client() as client:
            for uuid in before:
                assert client.put(f"{FHIR}/Patient/{uuid}", json=patient(uuid, "Before")).is_success
        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            done = cli("backup", str(node_dir), str(copy))
        finally:
            stop.set()
            writer.join()
        assert done.returncode == 0, done.stderr
        assert during, "the node was written to while the backup ran"
    finally:
        node.stop()

    original, copied = _held(node_dir), _held(copy)
    assert set(before) <= set(copied) <= set(original)
    assert all(copied[u] == original[u] for u in copied)
    assert f"Backed up {len(copied):,} records" in done.stdout
    assert sorted(p.name for p in copy.iterdir()) == [
        "fhirsync.db",
        "fhirsync.json",
        "recover-own-changes",
        "sync2.json",
    ]
    assert not (copy.parent / "monday.partial").exists()

    # Restore: the node is stopped and the copy is served in its place.
    restored = NodeHandle(copy, "n", port, "long-enough-pw").start_process()
    try:
        assert httpx.get(f"{restored.base_url}/health").json()["instanceId"] == "n"
        with restored.client() as client:  # the admin account came with the database
            answer = client.get(f"{FHIR}/Patient/{before[0]}")
            assert answer.status_code == 200 and answer.json()["name"][0]["family"] == "Before"
    finally:
        restored.stop()


def test_backup_refuses_an_existing_destination_and_a_postgresql_node(tmp_path: Path) -> None:
    node_dir = tmp_path / "clinic"
    init = ("init", str(node_dir), "--instance-id", "n", "--admin-password", "long-enough-pw")
    assert cli(*init).returncode == 0
    taken = tmp_path / "taken"
    taken.mkdir()
    refused = cli("backup", str(node_dir), str(taken))
    assert refused.returncode == 2 and "already exists" in refused.stderr
    assert list(taken.iterdir()) == []

    settings = node_dir / "fhirsync.json"
    data = json.loads(settings.read_text())
    data["db_url"] = "postgresql+psycopg://postgres:Hunter2-pw@127.0.0.1:5432/clinic"
    settings.write_text(json.dumps(data))
    postgres = cli("backup", str(node_dir), str(tmp_path / "pg-copy"))
    assert postgres.returncode == 2 and "pg_dump" in postgres.stderr
    assert "Hunter2" not in postgres.stderr
    assert not (tmp_path / "pg-copy").exists()


def test_the_parent_ca_file_comes_with_the_copy(tmp_path: Path) -> None:
    """A CA file kept in the node directory (as the README says) is part of the node: a copy
    without it would refuse to pull ("parent_ca_file ... is not a file") once restored. One
    named relative to somewhere outside the node directory is kept by its absolute path."""
    node_dir, outside = tmp_path / "clinic", tmp_path / "certs"
    init = ("init", str(node_dir), "--instance-id", "n", "--admin-password", "long-enough-pw")
    assert cli(*init).returncode == 0
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (node_dir / "tls").mkdir()
    (node_dir / "tls" / "parent-ca.pem").write_text(pem)
    outside.mkdir()
    (outside / "other-ca.pem").write_text(pem)
    settings = node_dir / "fhirsync.json"

    for value, copied in (
        ("tls/parent-ca.pem", "tls/parent-ca.pem"),
        ("../certs/other-ca.pem", None),
    ):
        data = json.loads(settings.read_text())
        settings.write_text(json.dumps({**data, "parent_ca_file": value}))
        copy = tmp_path / f"copy-{value.count('.')}"
        done = cli("backup", str(node_dir), str(copy))
        assert done.returncode == 0, done.stderr
        named = json.loads((copy / "fhirsync.json").read_text())["parent_ca_file"]
        trusted = load_node(copy).parent_ca_path  # a ConfigurationError if the file is missing
        if copied is not None:
            assert named == copied and trusted == (copy / copied).resolve()
            assert trusted.read_text() == pem
        else:
            assert Path(named) == trusted == (outside / "other-ca.pem").resolve()


def test_a_database_that_cannot_be_copied_fails_and_leaves_nothing(tmp_path: Path) -> None:
    node_dir = tmp_path / "clinic"
    init = ("init", str(node_dir), "--instance-id", "n", "--admin-password", "long-enough-pw")
    assert cli(*init).returncode == 0
    (node_dir / "fhirsync.db").write_bytes(b"this is not a SQLite database" * 200)
    failed = cli("backup", str(node_dir), str(tmp_path / "copy"))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "cannot copy the database" in failed.stderr
    assert not (tmp_path / "copy").exists() and not (tmp_path / "copy.partial").exists()


def test_a_child_restored_from_a_backup_catches_up_without_writing_twice(
    node_factory: NodeFactory,
) -> None:
    parent, child = make_pair(node_factory)
    first = [new_uuid() for _ in range(5)]
    for n, uuid in enumerate(first):
        put(parent, patient(uuid, f"First{n}"))
    assert pull(child).applied == 5
    copy = child.node_dir.parent / "child-backup"
    backup_node(child.node_dir, copy)
    later = [new_uuid() for _ in range(3)]
    for n, uuid in enumerate(later):
        put(parent, patient(uuid, f"Later{n}"))
    assert pull(child).applied == 3
    # A change made on the child after the backup, which reached the parent.
    own = create_patients(child, 1)[0]
    assert push(child).applied == 1

    # The child's directory is lost; the backup takes its place.
    _restore(child, copy)
    child.start()
    assert {u for (_c, u) in held(child)} == set(first)
    # The first pull catches up from the backup's markers: what the parent published since, and
    # the change that began here (a node otherwise never pulls back its own changes).
    again = pull(child)
    assert (again.outcome, again.applied) == ("ok", 4), again
    assert held(child) == held(parent) and own in {u for (_c, u) in held(child)}
    assert event_count(child) == 9  # the five it had were not written again
    assert not (child.node_dir / RECOVERY_FILE).exists()
    # Nothing is sent up again, and later runs skip this node's own changes as usual.
    assert push(child).applied == 0
    own_again = create_patients(child, 1)[0]
    assert push(child).applied == 1
    quiet = pull(child)
    assert quiet.applied == 0 and own_again in {u for (_c, u) in held(parent)}


def test_a_recovery_pull_stopped_by_the_parent_is_asked_for_again(
    node_factory: NodeFactory,
) -> None:
    parent, child = make_pair(node_factory)
    copy = child.node_dir.parent / "child-backup"
    backup_node(child.node_dir, copy)
    own = create_patients(child, 1)[0]
    assert push(child).applied == 1
    _restore(child, copy)
    parent.stop()
    assert pull(child).outcome == "unreachable"
    assert (child.node_dir / RECOVERY_FILE).exists()
    shown = cli("status", str(child.node_dir))
    assert "restored from a backup" in shown.stdout
    assert shown.returncode == 3, shown.stdout + shown.stderr  # the parent is down
    parent.start()
    recovered = pull(child)
    assert (recovered.outcome, recovered.applied) == ("ok", 1), recovered
    assert own in {u for (_c, u) in held(child)}
    assert not (child.node_dir / RECOVERY_FILE).exists()


def test_the_recovery_pull_can_be_asked_for_by_hand(node_factory: NodeFactory) -> None:
    # A copy made some other way (a pg_dump, a file copy of a stopped node) has no recovery file.
    parent, child = make_pair(node_factory)
    copy = child.node_dir.parent / "child-backup"
    backup_node(child.node_dir, copy)
    (copy / RECOVERY_FILE).unlink()
    own = create_patients(child, 1)[0]
    assert push(child).applied == 1
    _restore(child, copy)
    done = cli("pull", str(child.node_dir), "--include-own-changes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert own in {u for (_c, u) in held(child)}
    assert held(child) == held(parent)


def test_children_of_a_restored_parent_miss_none_of_its_new_changes(
    node_factory: NodeFactory,
) -> None:
    # Pages of 3. The parent is backed up at 10 entries, grows to 20 (the child reads them all:
    # its marker is entry 20 on page 7), then is restored and gets 5 new changes: entries 11-15 of
    # its feed, on pages 4 and 5. The child's marked entry is on no page any more.
    parent = node_factory("parent", extra_settings={"feed_page_size": 3})
    child = node_factory("child", parent=parent, start=False)
    for n in range(10):
        put(parent, patient(new_uuid(), f"Backed{n}"))
    copy = parent.node_dir.parent / "parent-backup"
    backup_node(parent.node_dir, copy)
    for n in range(10):
        put(parent, patient(new_uuid(), f"Lost{n}"))
    assert pull(child).applied == 20
    _restore(parent, copy)
    parent.start()
    after = [new_uuid() for _ in range(5)]
    for n, uuid in enumerate(after):
        put(parent, patient(uuid, f"After{n}"))
    again = pull(child)
    assert again.outcome == "ok", again
    # Resuming from the start of the last page (13-15) lost entries 11 and 12.
    assert set(after) <= {u for (_c, u) in held(child)}
    assert event_count(child) == 25  # the 10 read again were held already: none written twice


def _restore(node: NodeHandle, copy: Path) -> None:
    """Stop ``node`` and put the backup ``copy`` in place of its lost directory."""
    node.stop()
    shutil.rmtree(node.node_dir)
    copy.rename(node.node_dir)
