"""Push throughput: 10,000 FHIR Patients from a child to an empty parent over loopback HTTP.

    .venv/bin/python bench/push.py [--count 10000] [--reps 1] [--peer] [--batch 500]

The parent is a real ``fhirsync serve`` subprocess on SQLite; the child's store is loaded directly
(untimed) with the PouchDB harness's deterministic Patients (seed 42), then one ``run_push`` is
timed. With ``--peer`` the PouchDB harness (../shared/bench/pouchdb-peer, copied to a temporary
folder first, as its README asks) pushes the same documents in the same run, with its defaults and
with batch_size 500, and the ratio to the latter is printed (target: at least 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer_harness import copy_harness, generate, populate, run_node, serving

from fhirsync.records import RecordWrite
from fhirsync.store import records, users
from fhirsync.sync.push_run import run_push
from fhirsync.testing.servers import NodeHandle, create_node

CHILD_PASSWORD = "bench-child-password"


@dataclass(frozen=True)
class Run:
    """One timed push: wall seconds, and CPU seconds (user+sys) of the child and the parent."""

    seconds: float
    child_cpu: float
    parent_cpu: float


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float:
    """CPU seconds (user+sys) of process ``pid`` so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_child(child: NodeHandle, data: Path, count: int) -> None:
    """Load ``count`` Patients into the child's store as local changes (untimed setup)."""
    _config, db = child.open()
    try:
        batch: list[RecordWrite] = []
        with data.open(encoding="utf-8") as lines:
            for line in lines:
                if len(batch) >= 1000:
                    with db.write() as conn:
                        records.write_many(conn, batch)
                    batch = []
                resource: dict[str, Any] = json.loads(line)
                batch.append(RecordWrite("patient", resource["id"], resource, child.instance_id))
                count -= 1
                if count == 0:
                    break
        if batch:
            with db.write() as conn:
                records.write_many(conn, batch)
    finally:
        db.dispose()


def one_run(work: Path, data: Path, count: int, batch: int) -> Run:
    """One push of ``count`` Patients to a fresh parent, timed."""
    root = work / f"run-{time.monotonic_ns()}"
    parent = create_node(root, "bench-parent")
    _config, db = parent.open()
    with db.write() as conn:
        users.add(conn, "bench-child", CHILD_PASSWORD, "child", "bench-child")
    db.dispose()
    child = create_node(
        root,
        "bench-child",
        parent=parent,
        parent_user="bench-child",
        parent_password=CHILD_PASSWORD,
        extra_settings={"fetch_batch_size": batch},
    )
    load_child(child, data, count)
    parent.start_process()
    try:
        # NodeHandle keeps its serve process private; the bench only reads its pid for /proc.
        assert parent._process is not None
        parent_pid = parent._process.pid
        config, child_db = child.open()
        try:
            parent_cpu, child_cpu = _process_cpu(parent_pid), _own_cpu()
            started = time.perf_counter()
            result = run_push(config, child_db)
            seconds = time.perf_counter() - started
            child_cpu = _own_cpu() - child_cpu
            parent_cpu = _process_cpu(parent_pid) - parent_cpu
        finally:
            child_db.dispose()
        if result.outcome != "ok" or result.applied != count:
            raise SystemExit(f"push did not complete: {result}")
    finally:
        parent.stop()
    shutil.rmtree(root, ignore_errors=True)
    return Run(seconds, child_cpu, parent_cpu)


def peer(work: Path, count: int, reps: int) -> dict[str, float]:
    """PouchDB push docs/s (median), defaults and batch_size 500, from a copy of the harness."""
    copy = copy_harness(work)
    data = copy / "data" / "patients.ndjson"
    data.parent.mkdir(parents=True, exist_ok=True)
    generate(data, count)
    src = copy / "data" / "child" / "push_src"
    populate(copy, src, count, data)
    with serving(copy, copy / "data" / "parent") as port:
        out: dict[str, float] = {}
        for label, extra in (("default", []), ("bs500", ["--batch_size", "500"])):
            rates = []
            for rep in range(reps):
                remote = f"http://127.0.0.1:{port}/push_{label}_{rep}"
                row = run_node(
                    copy,
                    ["child.js", "--dir", "to", "--remote", remote, "--local", str(src), *extra],
                )
                rates.append(count / (row["ms"] / 1000))
            out[label] = statistics.median(rates)
        return out


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=500, help="records per push request")
    parser.add_argument("--peer", action="store_true", help="also run the PouchDB peer's push")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fhirsync-push-bench-") as tmp:
        work = Path(tmp)
        data = generate(work / "patients.ndjson", args.count)
        print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
        runs = [one_run(work, data, args.count, args.batch) for _ in range(args.reps)]
        seconds = statistics.median(r.seconds for r in runs)
        rate = args.count / seconds
        print(f"fhirsync push: {args.count} Patients in {seconds:.2f}s = {rate:,.0f} records/s")
        for r in runs:
            print(
                f"  run {r.seconds:.2f}s; CPU s (user+sys): child {r.child_cpu:.2f}, "
                f"parent {r.parent_cpu:.2f}"
            )
        if args.peer:
            rates = peer(work, args.count, args.reps)
            print(f"PouchDB push (defaults): {rates['default']:,.0f} docs/s")
            print(f"PouchDB push (batch_size 500): {rates['bs500']:,.0f} docs/s")
            print(f"ratio fhirsync / PouchDB bs500: {rate / rates['bs500']:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
