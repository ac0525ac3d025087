"""Run the node benchmarks (``make bench``): import, feed pages/s, ``_id`` batch reads/s, pull.

    .venv/bin/python bench/run_all.py [--count 10000] [--seconds 5] [--full] [--out-dir bench/out]

Small defaults keep ``make bench`` to a couple of minutes; ``--full`` uses the issues' sizes (50,000
Patients, 10 s per read test) and runs the PouchDB peer beside the pull benchmark. Each script
prints its figures and writes them as JSON to ``--out-dir`` (``import.json``, ``read.json``,
``pull.json``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> None:
    """Run one bench script with this interpreter; stop on failure."""
    print(f"$ {Path(sys.executable).name} bench/{script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="Patients per benchmark.")
    parser.add_argument("--seconds", type=float, default=5.0, help="Duration of each read test.")
    parser.add_argument("--page-size", type=int, default=1000, help="Feed entries per page.")
    parser.add_argument("--full", action="store_true", help="50,000 Patients, 10 s per read test.")
    parser.add_argument("--out-dir", type=Path, default=HERE / "out", help="Where JSON goes.")
    args = parser.parse_args()
    count, seconds = (50_000, 10.0) if args.full else (args.count, args.seconds)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    run("import_bench.py", "--count", str(count), "--out", str(args.out_dir / "import.json"))
    run(
        "read_bench.py",
        "--count",
        str(count),
        "--seconds",
        str(seconds),
        "--page-size",
        str(args.page_size),
        "--out",
        str(args.out_dir / "read.json"),
    )
    peer = [] if args.full else ["--no-peer"]
    run("pull.py", "--count", str(count), "--out", str(args.out_dir / "pull.json"), *peer)


if __name__ == "__main__":
    main()
