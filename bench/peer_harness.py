"""What the bench scripts share: the PouchDB peer harness, its generator, and the machine figures.

The harness (../shared/bench/pouchdb-peer) is never run where it is: its README asks for a copy, so
``copy_harness`` copies it (without ``node_modules``, ``data`` and ``results``) and runs ``npm ci``
there. Its node scripts print one JSON line last, which ``run_node`` returns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HARNESS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "pouchdb-peer"


def generate(out: Path, count: int) -> Path:
    """``count`` deterministic Patients (seed 42) as NDJSON at ``out``."""
    subprocess.run(
        [sys.executable, str(HARNESS / "gen_fhir.py"), str(count), str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


def copy_harness(work: Path) -> Path:
    """A copy of the harness in ``work`` with its node modules installed (``npm ci``)."""
    copy = work / "pouchdb-peer"
    shutil.copytree(HARNESS, copy, ignore=shutil.ignore_patterns("node_modules", "data", "results"))
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=copy,
        check=True,
        timeout=900,
        capture_output=True,
    )
    return copy


def run_node(copy: Path, args: list[str]) -> dict[str, Any]:
    """Run one harness script (``node ARGS`` in ``copy``); the JSON row it prints last."""
    done = subprocess.run(
        ["node", *args], cwd=copy, check=True, capture_output=True, text=True, timeout=1800
    )
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def populate(copy: Path, db: Path, count: int, data: Path) -> dict[str, Any]:
    """Load the first ``count`` documents of ``data`` into the PouchDB database at ``db``."""
    return run_node(
        copy, ["populate.js", "--db", str(db), "--count", str(count), "--data", str(data)]
    )


@contextmanager
def serving(copy: Path, parent_dir: Path) -> Iterator[int]:
    """The harness's PouchDB server over the databases in ``parent_dir`` for the block; its port."""
    server = subprocess.Popen(
        ["node", "server.js", "--dir", str(parent_dir)], cwd=copy, stdout=subprocess.PIPE, text=True
    )
    try:
        yield _listening_port(server)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _listening_port(server: subprocess.Popen[str]) -> int:
    assert server.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if "LISTENING" in line:
            return int(line.split("LISTENING", 1)[1].split()[0])
    raise SystemExit("the PouchDB server did not start")


def machine() -> dict[str, Any]:
    """The CPU count and load average, printed beside figures since other work slows them."""
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def write_figures(out: Path | None, figures: dict[str, Any]) -> None:
    """Write ``figures`` as indented JSON to ``out`` (its folder made), unless ``out`` is None."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
