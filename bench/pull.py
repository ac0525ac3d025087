"""Pull throughput and child memory: 50,000 FHIR Patients from a served parent into a fresh child.

    .venv/bin/python bench/pull.py [--count 50000] [--changes 1000] [--no-peer] [--out FILE.json]

1. A parent node (SQLite) is initialised and loaded with ``count`` deterministic Patients from the
   PouchDB harness's generator (seed 42) by ``python -m fhirsync import`` (untimed), then served
   as a real ``fhirsync serve`` subprocess.
2. A fresh SQLite child runs ``python -m fhirsync pull CHILD`` as a subprocess: timed over the
   whole command (process start included) and as the command reports it (the run itself); the
   child's peak RSS and CPU time come from wait4 (the pull process and its validation workers:
   peak = the largest of them, CPU = their sum).
3. ``changes`` Patients are updated and ``changes`` new ones added at the parent (through its
   store, untimed), and the incremental pull is timed the same way.
4. Unless ``--no-peer``, the PouchDB peer (../shared/bench/pouchdb-peer, copied to a temporary
   folder first as its README asks; ``npm ci``) pulls the same documents in the same run with
   its defaults and with batch_size 500, then the same incremental change set (mutate.js); the
   ratio fhirsync / peer (batch_size 500) is printed. Target (issue 3): at least 2x.

Figures are printed, never asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from peer_harness import copy_harness, generate, machine, populate, run_node, serving, write_figures

from fhirsync.records import RecordWrite
from fhirsync.store import records
from fhirsync.testing.servers import create_node

TARGET_RATIO = 2.0


def head(data: Path, out: Path, count: int) -> Path:
    """The first ``count`` lines of ``data`` at ``out``."""
    with data.open("rb") as src, out.open("wb") as dst:
        for n, line in enumerate(src):
            if n >= count:
                break
            dst.write(line)
    return out


def timed_pull(child_dir: Path) -> dict[str, Any]:
    """Run ``fhirsync pull`` once as a subprocess; wall time, reported time, peak RSS."""
    command = [sys.executable, "-m", "fhirsync", "pull", str(child_dir)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        # wait4: the rusage of this pull alone (its process and its validation workers, which it
        # waits for); ru_maxrss is the largest of them, ru_utime/ru_stime their sum.
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())
    if done.returncode != 0:
        raise SystemExit(f"pull failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    match = re.search(
        r"(\d+) events read, (\d+) records applied, (\d+) failed in ([\d.]+)s", done.stdout
    )
    if match is None:
        raise SystemExit(f"unexpected pull output:\n{done.stdout}")
    applied, seconds = int(match.group(2)), float(match.group(4))
    return {
        "applied": applied,
        "failed": int(match.group(3)),
        "wall_seconds": round(wall, 2),
        "run_seconds": seconds,
        "records_per_s_run": round(applied / seconds) if seconds else None,
        "records_per_s_wall": round(applied / wall),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
    }


def change_parent(parent_dir: Path, extra: Path, count: int, changes: int) -> None:
    """Update ``changes`` of the parent's Patients and add the ``changes`` Patients of ``extra``."""
    from fhirsync.node import open_node

    _config, db = open_node(parent_dir)
    try:
        writes: list[RecordWrite] = []
        with db.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT uuid, body FROM records WHERE category = 'patient' ORDER BY uuid LIMIT ?",
                (changes,),
            ).all()
        for uuid, body in rows:
            resource_: dict[str, Any] = orjson.loads(body)
            telecom = resource_.setdefault("telecom", [{"system": "phone", "value": ""}])
            telecom[0]["value"] = "+1-555-000-" + str(1000 + int(uuid[:4], 16) % 9000)
            writes.append(RecordWrite("patient", uuid, resource_, "bench-parent"))
        with extra.open("rb") as lines:
            for line in lines:
                new: dict[str, Any] = orjson.loads(line)
                writes.append(RecordWrite("patient", new["id"], new, "bench-parent"))
        with db.write() as conn:
            records.write_many(conn, writes)
    finally:
        db.dispose()


def run_fhirsync(work: Path, data: Path, extra: Path, count: int, changes: int) -> dict[str, Any]:
    """Initial and incremental pull figures of fhirsync."""
    root = work / "nodes"
    parent = create_node(root, "bench-parent")
    subprocess.run(
        [sys.executable, "-m", "fhirsync", "import", str(parent.node_dir), str(data)],
        check=True,
        capture_output=True,
        timeout=3600,
    )
    child = create_node(root, "bench-child", parent=parent)
    parent.start_process()
    try:
        initial = timed_pull(child.node_dir)
        if initial["applied"] != count:
            raise SystemExit(f"initial pull applied {initial['applied']} of {count}")
        change_parent(parent.node_dir, extra, count, changes)
        incremental = timed_pull(child.node_dir)
    finally:
        parent.stop()
    db_bytes = sum(p.stat().st_size for p in child.node_dir.glob("fhirsync.db*"))
    return {
        "initial": initial,
        "incremental": incremental,
        "child_db_mib": round(db_bytes / 2**20, 1),
    }


# --- the PouchDB peer --------------------------------------------------------------------------


def run_peer(work: Path, count: int, changes: int) -> dict[str, Any]:
    """PouchDB initial pull docs/s (defaults and batch_size 500) and the incremental pull."""
    copy = copy_harness(work)
    data = copy / "data" / "patients.ndjson"
    data.parent.mkdir(parents=True, exist_ok=True)
    generate(data, count + changes)
    parent_dir = copy / "data" / "parent"
    for name in ("p_default", "p_bs500"):
        populate(copy, parent_dir / name, count, data)
    with serving(copy, parent_dir) as port:
        out: dict[str, Any] = {}
        for label, extra in (("default", []), ("bs500", ["--batch_size", "500"])):
            remote = f"http://127.0.0.1:{port}/p_{label}"
            local = str(copy / "data" / "child" / label)
            pull = ["child.js", "--dir", "from", "--remote", remote, "--local", local, *extra]
            first = run_node(copy, pull)
            run_node(
                copy,
                [
                    "mutate.js",
                    "--remote",
                    remote,
                    "--update",
                    str(changes),
                    "--add",
                    str(changes),
                    "--skip",
                    str(count),
                    "--data",
                    str(data),
                ],
            )
            second = run_node(copy, pull)
            out[label] = {
                "docs_per_s": round(count / (first["ms"] / 1000)),
                "seconds": round(first["ms"] / 1000, 2),
                "peak_rss_mib": round(first["max_rss_kb"] / 1024, 1),
                "incremental_seconds": round(second["ms"] / 1000, 2),
                "incremental_written": second["docs_written"],
            }
        return out


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="Patients at the parent.")
    parser.add_argument("--changes", type=int, default=1000, help="Updated and new Patients.")
    parser.add_argument("--no-peer", action="store_true", help="Skip the PouchDB peer.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fhirsync-pull-bench-") as tmp:
        work = Path(tmp)
        everything = generate(work / "all.ndjson", args.count + args.changes)
        data = head(everything, work / "patients.ndjson", args.count)
        extra = work / "extra.ndjson"
        with everything.open("rb") as src, extra.open("wb") as dst:
            for n, line in enumerate(src):
                if n >= args.count:
                    dst.write(line)
        figures: dict[str, Any] = {"count": args.count, "changes": args.changes}
        figures["fhirsync"] = run_fhirsync(work, data, extra, args.count, args.changes)
        if not args.no_peer:
            figures["pouchdb"] = run_peer(work, args.count, args.changes)
    figures.update(machine())
    ours = figures["fhirsync"]
    first, second = ours["initial"], ours["incremental"]
    print(f"fhirsync pull of {args.count:,} Patients into a fresh SQLite child (over HTTP)")
    print(
        f"  initial: {first['records_per_s_run']:,} records/s (run), "
        f"{first['records_per_s_wall']:,} records/s (whole command, {first['wall_seconds']} s); "
        f"child peak RSS {first['peak_rss_mib']} MiB; {first['cpu_seconds']} child CPU s"
    )
    print(
        f"  incremental ({args.changes:,} updated + {args.changes:,} new): "
        f"{second['applied']:,} applied in {second['run_seconds']} s (run), "
        f"{second['wall_seconds']} s (whole command); peak RSS {second['peak_rss_mib']} MiB"
    )
    if "pouchdb" in figures:
        peer = figures["pouchdb"]
        for label in ("default", "bs500"):
            row = peer[label]
            print(
                f"PouchDB pull ({label}): {row['docs_per_s']:,} docs/s ({row['seconds']} s), "
                f"peak RSS {row['peak_rss_mib']} MiB; incremental {row['incremental_seconds']} s"
            )
        ratio = first["records_per_s_run"] / peer["bs500"]["docs_per_s"]
        ratio_wall = first["records_per_s_wall"] / peer["bs500"]["docs_per_s"]
        figures["ratio_run"], figures["ratio_wall"] = round(ratio, 2), round(ratio_wall, 2)
        print(
            f"ratio fhirsync / PouchDB bs500: {ratio:.2f}x (run), {ratio_wall:.2f}x (whole "
            f"command) (target >= {TARGET_RATIO:.0f}x)"
        )
    print(f"  {figures['cpus']} CPUs, load average {figures['load_average']}")
    write_figures(args.out, figures)


if __name__ == "__main__":
    main()
