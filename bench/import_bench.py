"""`fhirsync import` throughput and memory: 50,000 FHIR Patients into a fresh SQLite node.

    .venv/bin/python bench/import_bench.py [--count 50000] [--workers N] [--out FILE.json]

The Patients come from the PouchDB harness's deterministic generator
(../shared/bench/pouchdb-peer/gen_fhir.py, seed 42; run where it is: it only writes its output).
A fresh node is initialised in a temporary folder and ``python -m fhirsync import`` runs as a
subprocess, exactly as a user runs it, with every resource validated. Printed:

- records/s over the whole command (process start, imports, migrations included) and as the
  command itself reports it (the import loop alone);
- peak RSS of the largest process (getrusage of the waited-for children: the CLI and its
  validation workers) and the peak PSS of the whole process tree, sampled every 50 ms from /proc;
- the CPU seconds used and the machine's load average, since other work on the machine slows it.

Target (issue 2): at least 4,000 records/s on SQLite with every resource validated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fhirsync.node import init_node

GENERATOR = (
    Path(__file__).resolve().parents[2] / "shared" / "bench" / "pouchdb-peer" / "gen_fhir.py"
)
TARGET = 4000.0


def generate(out: Path, count: int) -> Path:
    """``count`` deterministic Patients (seed 42) as NDJSON at ``out``."""
    subprocess.run(
        [sys.executable, str(GENERATOR), str(count), str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


def _tree_pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` and its descendants, in KiB (0 once it is gone).

    PSS splits pages shared after fork between the processes sharing them, so the sum is the
    memory the tree really uses (a plain RSS sum counts the shared model code once per worker).
    """
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
        total += int(match.group(1)) if match else 0
        todo.extend(int(c) for c in children)
    return total


class _TreeSampler(threading.Thread):
    """Samples the process tree's total PSS every 50 ms and keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak_kib = max(self.peak_kib, _tree_pss_kib(self.pid))


def run_import(node_dir: Path, data: Path, workers: int | None) -> dict[str, Any]:
    """Run ``fhirsync import`` once; its figures."""
    command = [sys.executable, "-m", "fhirsync", "import", str(node_dir), str(data)]
    if workers is not None:
        command += ["--workers", str(workers)]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = _TreeSampler(process.pid)
    sampler.start()
    stdout, stderr = process.communicate(timeout=3600)
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"import failed ({process.returncode}):\n{stdout}\n{stderr}")
    reported = re.search(r"imported (\d+) records .* \(([\d,]+) records/s\)", stdout)
    imported = int(reported.group(1)) if reported else 0
    return {
        "imported": imported,
        "wall_seconds": round(wall, 2),
        "records_per_s_wall": round(imported / wall),
        "records_per_s_import": int(reported.group(2).replace(",", "")) if reported else None,
        "peak_rss_largest_process_mib": round(usage.ru_maxrss / 1024, 1),
        "peak_pss_process_tree_mib": round(sampler.peak_kib / 1024, 1),
        "cpu_seconds": round(
            (usage.ru_utime - cpu_before.ru_utime) + (usage.ru_stime - cpu_before.ru_stime), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="Patients to import.")
    parser.add_argument("--workers", type=int, default=None, help="Validation processes.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fhirsync-import-bench-") as tmp:
        work = Path(tmp)
        data = generate(work / "patients.ndjson", args.count)
        init_node(work / "node", instance_id="bench-import", admin_password="bench-admin-pw")
        figures = run_import(work / "node", data, args.workers)
        db_bytes = sum(p.stat().st_size for p in (work / "node").glob("fhirsync.db*"))
        file_bytes = data.stat().st_size
    figures.update(
        count=args.count,
        file_mib=round(file_bytes / 2**20, 1),
        database_mib=round(db_bytes / 2**20, 1),
        cpus=os.cpu_count(),
        load_average=[round(x, 2) for x in os.getloadavg()],
        target_records_per_s=TARGET,
    )
    print(f"fhirsync import of {args.count:,} Patients (SQLite, every resource validated)")
    print(
        f"  {figures['records_per_s_import']:,} records/s (import loop), "
        f"{figures['records_per_s_wall']:,} records/s (whole command, {figures['wall_seconds']} s)"
    )
    print(
        f"  peak RSS {figures['peak_rss_largest_process_mib']} MiB (largest process), "
        f"{figures['peak_pss_process_tree_mib']} MiB PSS (whole process tree)"
    )
    print(
        f"  {figures['cpu_seconds']} CPU s on {figures['cpus']} CPUs, "
        f"load average {figures['load_average']}; target >= {TARGET:,.0f} records/s"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
