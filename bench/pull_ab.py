"""Interleaved A/B timing of `fhirsync pull` for two (or more) source trees, against one parent.

    .venv/bin/python bench/pull_ab.py --count 20000 --rounds 5 TREE_A TREE_B [TREE_C ...]

Each TREE is a checkout of this repository (for instance `git worktree add /tmp/a HEAD~1`). One
parent is loaded with ``count`` generated Patients and served once (by the tree this script runs
from); then, round after round, a fresh copy of one empty child is pulled with each tree in turn
(``PYTHONPATH=TREE/src``), so every tree sees the same machine load on average. Prints the pull's
own run time per tree and round, and the median. On a shared, noisy machine, runs of one tree
after another mislead (measured here: a "10% gain" that interleaved runs showed to be noise).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from peer_harness import generate

from fhirsync.testing.servers import create_node


def pull_seconds(tree: Path, child: Path) -> float:
    """The run time ``fhirsync pull`` reports, with ``tree``'s sources first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "fhirsync", "pull", str(child)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    match = re.search(r"records applied, \d+ failed in ([\d.]+)s", done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"pull with {tree} failed:\n{done.stdout}\n{done.stderr}")
    return float(match.group(1))


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="Source trees to compare.")
    parser.add_argument("--count", type=int, default=20_000, help="Patients at the parent.")
    parser.add_argument("--rounds", type=int, default=5, help="Pulls per tree.")
    args = parser.parse_args()
    for tree in args.trees:
        if not (tree / "src" / "fhirsync").is_dir():
            raise SystemExit(f"{tree} is not a fhirsync checkout (no src/fhirsync)")
    with tempfile.TemporaryDirectory(prefix="fhirsync-pull-ab-") as tmp:
        work = Path(tmp)
        data = generate(work / "patients.ndjson", args.count)
        parent = create_node(work / "nodes", "bench-parent")
        subprocess.run(
            [sys.executable, "-m", "fhirsync", "import", str(parent.node_dir), str(data)],
            check=True,
            capture_output=True,
        )
        empty_child = create_node(work / "nodes", "bench-child", parent=parent).node_dir
        parent.start_process()
        times: dict[Path, list[float]] = {tree: [] for tree in args.trees}
        try:
            for round_ in range(args.rounds):
                for n, tree in enumerate(args.trees):
                    child = work / f"child-{round_}-{n}"
                    shutil.copytree(empty_child, child)
                    times[tree].append(pull_seconds(tree, child))
                    shutil.rmtree(child)
        finally:
            parent.stop()
    print(f"fhirsync pull of {args.count:,} Patients, {args.rounds} interleaved rounds")
    for tree, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {tree}: median {statistics.median(values):.2f} s  ({runs})")
    print(f"  {os.cpu_count()} CPUs, load average {[round(x, 2) for x in os.getloadavg()]}")


if __name__ == "__main__":
    main()
