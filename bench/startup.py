"""Start-up cost of the ``fhirsync`` command line: wall and CPU time of whole commands.

    .venv/bin/python bench/startup.py [--runs 7] [--out FILE.json]

A parent node (SQLite, empty) is served as a real ``fhirsync serve`` subprocess and an empty
child is initialised under it (both untimed). Each command below then runs ``runs`` times as a
subprocess (``python -m fhirsync ...``); the best wall time and the best CPU time (user + sys of
the process, from wait4) are printed, with the median wall beside them:

- ``python -c pass``: the interpreter alone, the floor under every figure;
- ``import fhirsync.cli.main``: what every command pays before Typer parses its arguments;
- ``--help``; ``pull CHILD`` (nothing to pull: one empty feed page per category);
  ``push CHILD`` (nothing to send); ``status CHILD`` (asks the parent for /health and its feeds).

The first of the runs also warms the file cache and the bytecode caches, so the best of several
is the figure a user sees on a warm machine. Figures are printed, never asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peer_harness import machine, write_figures

from fhirsync.testing.servers import create_node


def timed(command: list[str]) -> tuple[float, float, int, str]:
    """Run ``command`` once: wall seconds, CPU seconds (user + sys), exit code, stderr's end."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    err = process.stderr.read()
    process.stderr.close()
    # wait4 gives this process's own rusage, unlike getrusage(RUSAGE_CHILDREN), which sums
    # every child reaped so far (the served parent included once it stops).
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, code, err.decode(errors="replace")[-2000:]


def measure(label: str, command: list[str], runs: int) -> dict[str, Any]:
    """The best of ``runs`` runs of ``command``, printed as one line."""
    walls, cpus, codes = [], [], set()
    for _ in range(runs):
        wall, cpu, code, err = timed(command)
        if code != 0 and code not in codes:
            # A failing command is timed all the same (its exit code is printed); say why once.
            sys.stderr.write(err)
        walls.append(wall)
        cpus.append(cpu)
        codes.add(code)
    row = {
        "command": label,
        "best_wall_s": round(min(walls), 3),
        "median_wall_s": round(statistics.median(walls), 3),
        "best_cpu_s": round(min(cpus), 3),
        "exit_codes": sorted(codes),
    }
    print(
        f"{label:<28} wall best {row['best_wall_s']:.3f} s  median {row['median_wall_s']:.3f} s"
        f"  CPU best {row['best_cpu_s']:.3f} s  exit {row['exit_codes']}",
        flush=True,
    )
    return row


def main() -> None:
    """Serve an empty parent, initialise a child, time each command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (best is kept)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    fhirsync = [sys.executable, "-m", "fhirsync"]
    with tempfile.TemporaryDirectory(prefix="fhirsync-startup-") as tmp:
        root = Path(tmp)
        parent = create_node(root, "parent").start_process()
        try:
            child = create_node(root, "child", parent=parent)
            node = str(child.node_dir)
            print(f"machine: {machine()}  python {sys.version.split()[0]}  runs {args.runs}")
            rows = [
                measure("python -c pass", [sys.executable, "-c", "pass"], args.runs),
                measure(
                    "import fhirsync.cli.main",
                    [sys.executable, "-c", "import fhirsync.cli.main"],
                    args.runs,
                ),
                measure("fhirsync --help", [*fhirsync, "--help"], args.runs),
                measure("fhirsync pull (empty)", [*fhirsync, "pull", node], args.runs),
                measure("fhirsync push (empty)", [*fhirsync, "push", node], args.runs),
                measure("fhirsync status", [*fhirsync, "status", node], args.runs),
            ]
        finally:
            parent.stop()
    write_figures(args.out, {"machine": machine(), "runs": args.runs, "commands": rows})


if __name__ == "__main__":
    main()
