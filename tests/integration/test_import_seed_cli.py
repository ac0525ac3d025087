"""`fhirsync import` and `fhirsync seed` as a user runs them (real subprocesses, real SQLite)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from fhirsync.cli.main import build_app
from fhirsync.node import open_node
from fhirsync.service import importer
from fhirsync.store import records
from fhirsync.store.tables import events
from fhirsync.testing.servers import NodeHandle

NodeFactory = Callable[..., NodeHandle]
PATIENT_ID = "5946f880-b197-400b-9caa-a3c661d23041"
VISIT_ID = "6519d653-393b-4118-9c83-a3715b82d4ac"
LENIENT_ID = "0b42f99b-776e-4388-8f6f-84357ae2a8fb"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhirsync", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _line(value: Any) -> str:
    return json.dumps(value)


def _ndjson(path: Path) -> Path:
    patient = {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "name": [{"family": "Chebaskwony", "given": ["Collet"]}],
        "gender": "female",
        "birthDate": "1976-08-25",
    }
    visit = {
        "resourceType": "Encounter",
        "id": VISIT_ID,
        "meta": {"tag": [{"system": "http://fhir.openmrs.org/ext/encounter-tag", "code": "visit"}]},
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org"},
    }
    lenient = {
        "resourceType": "Patient",
        "id": LENIENT_ID,
        "identifier": {"use": "official", "value": "4444-6"},
        "gender": "male",
    }
    lines = [
        _line(patient),  # 1
        '{"resourceType": "Patient", "gender": ',  # 2: not JSON
        _line({"resourceType": "Patient", "gender": "femme"}),  # 3: bad code
        _line({"resourceType": "Spaceship", "id": "x"}),  # 4: no such FHIR type
        _line(observation),  # 5: no id -> a new uuid
        "",  # 6: blank, skipped
        _line(visit),  # 7
        "[1, 2]",  # 8: not an object
        _line({"resourceType": "Organization", "name": "Clinic"}),  # 9: not served here
        _line(lenient),  # 10: a lone object where FHIR wants a list, accepted and stored as a list
        _line({"resourceType": "Patient", "id": "not a valid id!"}),  # 11
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.postgres
def test_import_stores_good_lines_with_events_and_reports_bad_lines(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    node = node_factory("importer", start=False)
    result = run("import", str(node.node_dir), str(_ndjson(tmp_path / "data.ndjson")))
    assert result.returncode == 1, result.stderr
    err = result.stderr
    assert "line 2:" in err and "not valid JSON" in err
    assert "line 3: Patient.gender:" in err and "femme" in err
    assert "line 4: Spaceship:" in err
    assert "line 8:" in err and "line 9: Organization:" in err
    assert "line 11: Patient.id:" in err
    for good in ("line 1:", "line 5:", "line 6:", "line 7:", "line 10:"):
        assert good not in err
    assert "imported 4 records" in result.stdout and "6 lines failed" in result.stdout

    config, db = open_node(node.node_dir)
    try:
        with db.read() as conn:
            counts = records.counts_by_category(conn)
            assert counts == {
                "patient": {"active": 2},
                "visit": {"active": 1},
                "observation": {"active": 1},
            }
            assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 4
            origins = {r.origin for r in records.get_many(conn, ["patient"], [PATIENT_ID]).values()}
            assert origins == {config.instance_id}
            lenient = records.get(conn, "patient", LENIENT_ID)
            assert lenient is not None
            assert lenient.resource()["identifier"] == [{"use": "official", "value": "4444-6"}]
    finally:
        db.dispose()

    # The same file again: records with ids are unchanged (no new events); the observation has no
    # id, so it is a new record again; the bad lines still fail.
    again = run("import", str(node.node_dir), str(tmp_path / "data.ndjson"))
    assert again.returncode == 1
    assert "imported 1 records (3 unchanged), 6 lines failed" in again.stdout


def test_import_exits_2_for_a_missing_file_or_node(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    node = node_factory("importer", start=False)
    missing = run("import", str(node.node_dir), str(tmp_path / "nope.ndjson"))
    assert missing.returncode == 2
    assert "nope.ndjson" in missing.stderr
    folder = cli("import", str(node.node_dir), str(tmp_path))  # the folder, not the file in it
    assert folder.exit_code == 2 and f"{tmp_path}: is a directory" in folder.stderr, folder.output
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # what `fhirsync import NODE <(zcat export.gz)` hands over
    piped = cli("import", str(node.node_dir), str(pipe))
    assert piped.exit_code == 2 and "is not a regular file" in piped.stderr, piped.output
    assert "no such file" not in piped.stderr  # it was there: the old message sent people looking
    good = tmp_path / "ok.ndjson"
    good.write_text(json.dumps({"resourceType": "Patient", "gender": "male"}) + "\n")
    no_node = run("import", str(tmp_path / "not-a-node"), str(good))
    assert no_node.returncode == 2
    ok = run("import", str(node.node_dir), str(good))
    assert ok.returncode == 0, ok.stderr
    assert "imported 1 records" in ok.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_import_keeps_line_order_across_chunks_and_workers(
    node_factory: NodeFactory, tmp_path: Path, workers: int
) -> None:
    node = node_factory("importer", start=False)
    path = tmp_path / "many.ndjson"
    lines = []
    for number in range(1, 41):
        gender = "femme" if number % 7 == 0 else "female"
        lines.append(json.dumps({"resourceType": "Patient", "id": f"p-{number}", "gender": gender}))
    path.write_text("\n".join(lines) + "\n")
    failed: list[importer.LineError] = []
    config, db = open_node(node.node_dir)
    try:
        result = importer.import_file(
            db,
            path,
            config.instance_id,
            workers=workers,
            batch_size=6,
            chunk_lines=4,
            on_error=failed.append,
        )
        with db.read() as conn:
            seq = [e.record_uuid for e in _events(conn)]
    finally:
        db.dispose()
    assert [e.line for e in failed] == [7, 14, 21, 28, 35]
    assert all(e.element == "Patient.gender" for e in failed)
    assert result.imported == 35 and result.failed == 5 and result.lines == 40
    assert seq == [f"p-{n}" for n in range(1, 41) if n % 7]


def _events(conn: Any) -> list[Any]:
    return list(conn.execute(select(events).order_by(events.c.id)))


@pytest.mark.postgres
def test_seed_command_writes_counts_and_is_repeatable(node_factory: NodeFactory) -> None:
    node = node_factory("seeded", start=False)
    first = run("seed", str(node.node_dir), "--patients", "8", "--seed", "11")
    assert first.returncode == 0, first.stderr
    for category in ("location", "provider", "patient", "visit", "encounter", "observation"):
        assert category in first.stdout
    _config, db = open_node(node.node_dir)
    try:
        with db.read() as conn:
            counts = records.counts_by_category(conn)
            total = conn.execute(select(func.count()).select_from(events)).scalar_one()
    finally:
        db.dispose()
    assert counts["patient"] == {"active": 8}
    assert total == sum(states["active"] for states in counts.values())
    assert f"seeded {total} records ({total} new or changed)" in first.stdout
    again = run("seed", str(node.node_dir), "--patients", "8", "--seed", "11")
    assert again.returncode == 0
    assert f"seeded {total} records (0 new or changed)" in again.stdout


def test_import_reads_gzip_and_a_byte_order_mark_and_refuses_utf16_by_name(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    # Exports arrive as .ndjson.gz, from Notepad with a BOM and CRLF, or from PowerShell's '>'
    # as UTF-16: before, every line of these "failed" with 'not valid JSON'.
    node = str(node_factory("importer", start=False).node_dir)
    plain = _ndjson(tmp_path / "data.ndjson").read_bytes()
    (tmp_path / "data.ndjson.gz").write_bytes(gzip.compress(plain))
    zipped = cli("import", node, str(tmp_path / "data.ndjson.gz"), "--workers", "1")
    assert zipped.exit_code == 1, zipped.output
    assert "imported 4 records (0 unchanged), 6 lines failed" in zipped.stdout
    assert "line 2:" in zipped.stderr and "line 1:" not in zipped.stderr
    (tmp_path / "cut.ndjson.gz").write_bytes(gzip.compress(plain)[:-20])  # a broken download
    cut = cli("import", node, str(tmp_path / "cut.ndjson.gz"), "--workers", "1")
    assert cut.exit_code == 2 and "gzip data is damaged" in cut.stderr, cut.output
    # Damaged in its first bytes (a header from another tool, a file cut at 10 bytes): this
    # was a traceback (BadGzipFile, EOFError) from reading the first line.
    for name, damaged in (("header", b"\x1f\x8b garbage"), ("short", gzip.compress(plain)[:10])):
        (tmp_path / f"{name}.ndjson.gz").write_bytes(damaged)
        bad = cli("import", node, str(tmp_path / f"{name}.ndjson.gz"), "--workers", "1")
        assert bad.exit_code == 2 and "gzip data is damaged" in bad.stderr, (name, bad.output)

    windows = b"\xef\xbb\xbf" + plain.replace(b"\n", b"\r\n")
    (tmp_path / "windows.ndjson").write_bytes(windows)
    again = cli("import", node, str(tmp_path / "windows.ndjson"), "--workers", "1")
    assert again.exit_code == 1, again.output
    assert "imported 1 records (3 unchanged), 6 lines failed" in again.stdout
    assert "line 1:" not in again.stderr

    (tmp_path / "ps.ndjson").write_text(plain.decode(), encoding="utf-16")
    refused = cli("import", node, str(tmp_path / "ps.ndjson"), "--workers", "1")
    assert refused.exit_code == 2, refused.output
    assert "UTF-16" in refused.stderr and "line" not in refused.stderr


def cli(*args: str) -> Result:
    """The command line in this process (a subprocess costs ~1 s)."""
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_app(), list(args))
