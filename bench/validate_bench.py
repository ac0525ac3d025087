"""FHIR validation cost per Patient: the full model path against the fast path (in-process, CPU).

    .venv/bin/python bench/validate_bench.py [--count 2000] [--repeat 5] [--out FILE.json]

The Patients come from the PouchDB harness's deterministic generator
(../shared/bench/pouchdb-peer/gen_fhir.py, seed 42, about 1.6 KB each; run where it is: it only
writes its output). Each figure is the best of ``--repeat`` passes over all of them after one
warm-up pass (caches filled, the fast path's rules compiled), in µs per Patient:

- ``model_validate``: plain ``Patient.model_validate`` of fhir.resources (R4B), no code checks;
- ``full path``: what ``normalize_resource`` ran before the fast path: the model with the memo of
  nested elements, then the ordered walk of required-binding codes;
- ``fast_accepts``: the fast path's structural check alone;
- ``normalize_resource``: what callers get now (fast path, then the one-pass code check).

Target: at most 40 µs per Patient for ``normalize_resource`` (pull/push throughput, issues 3-4).
Figures depend on the machine and its load, so the CPU count and load average are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhir.resources.R4B.patient import Patient

from fhirsync.service import codes, model_memo, validation
from fhirsync.service.fastcheck import fast_accepts

GENERATOR = (
    Path(__file__).resolve().parents[2] / "shared" / "bench" / "pouchdb-peer" / "gen_fhir.py"
)
TARGET_US = 40.0


def generate(out: Path, count: int) -> list[dict[str, Any]]:
    """``count`` deterministic Patients (seed 42), parsed."""
    subprocess.run(
        [sys.executable, str(GENERATOR), str(count), str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return [json.loads(line) for line in out.read_text().splitlines()]


def per_patient_us(
    check: Callable[[dict[str, Any]], object], patients: list[dict[str, Any]], repeat: int
) -> float:
    """Best of ``repeat`` timed passes (after one warm-up pass), in µs per Patient."""
    for patient in patients:
        check(patient)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for patient in patients:
            check(patient)
        best = min(best, time.perf_counter() - start)
    return best / len(patients) * 1e6


def _full_path(patient: dict[str, Any]) -> None:
    # The model path of validation.py without the fast path in front of it.
    model_memo.build(Patient, patient)
    codes.check_codes_in_order(patient)


def _fast_only(patient: dict[str, Any]) -> None:
    if not fast_accepts(Patient, patient):
        raise SystemExit("a generated Patient left the fast path: the figures would be wrong")


def main() -> None:
    """Print (and optionally write) the per-Patient cost of each path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="Patients to validate.")
    parser.add_argument("--repeat", type=int, default=5, help="Timed passes (best is kept).")
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures as JSON.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        patients = generate(Path(tmp) / "patients.ndjson", args.count)
    paths: dict[str, Callable[[dict[str, Any]], object]] = {
        "model_validate": Patient.model_validate,
        "full path": _full_path,
        "fast_accepts": _fast_only,
        "normalize_resource": lambda p: validation.normalize_resource(p, "Patient"),
    }
    figures: dict[str, Any] = {
        "count": len(patients),
        "repeat": args.repeat,
        "us_per_patient": {},
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"FHIR validation of {len(patients):,} generated Patients, best of {args.repeat}")
    for name, check in paths.items():
        us = per_patient_us(check, patients, args.repeat)
        figures["us_per_patient"][name] = round(us, 1)
        print(f"  {name:<20} {us:8.1f} µs/Patient  ({1e6 / us:,.0f} /s on one core)")
    full = figures["us_per_patient"]["full path"]
    now = figures["us_per_patient"]["normalize_resource"]
    print(f"  speed-up of normalize_resource over the full path: {full / now:.1f}x")
    print(f"  target: normalize_resource <= {TARGET_US:.0f} µs/Patient")
    print(f"  cpus {figures['cpus']}, load average {figures['load_average']}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
