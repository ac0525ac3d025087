"""Read throughput of a node holding 50,000 Patients: Atom feed pages/s and FHIR ``_id`` batches/s.

    .venv/bin/python bench/read_bench.py [--count 50000] [--page-size 1000] [--ids 100]
                                         [--seconds 10] [--out FILE.json]

The Patients (the PouchDB harness's deterministic generator, seed 42) are imported into a fresh
SQLite node with ``fhirsync.service.importer`` (untimed), then the node is served by a real
``fhirsync serve`` subprocess on loopback, so the client (httpx, keep-alive, HTTP Basic) and the
server do not share an interpreter. Measured, one request at a time:

- feed pages/s: GET ``/ws/atomfeed/patient/{n}`` over the archived pages (every page before
  ``recent``) in turn, without If-None-Match, so every page is rendered and sent in full;
- FHIR ``_id`` batch reads/s: GET ``/ws/fhir2/R4/Patient?_id=a,b,...`` with ``--ids`` random ids
  of stored Patients each (a fixed random sequence), every answer checked to hold them all.

Each measurement runs for ``--seconds`` after one untimed warm-up request.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from lxml import etree
from peer_harness import generate, machine, write_figures

from fhirsync.service import importer
from fhirsync.testing.servers import NodeHandle, create_node

ATOM = "{http://www.w3.org/2005/Atom}"


def load(node: NodeHandle, data: Path) -> list[str]:
    """Import ``data`` into the node's store (untimed); the Patient ids."""
    config, db = node.open()
    try:
        result = importer.import_file(db, data, config.instance_id)
    finally:
        db.dispose()
    if result.failed:
        raise SystemExit(f"{result.failed} lines failed to import: {result.errors[:3]}")
    ids: list[str] = []
    with data.open("rb") as lines:
        for line in lines:
            ids.append(json.loads(line)["id"])
    return ids


def timed(seconds: float, step: Callable[[int], int]) -> tuple[int, int, float]:
    """Call ``step(i)`` (which returns items read) for ``seconds``; calls, items and elapsed."""
    step(0)  # warm-up, untimed
    calls = items = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        items += step(calls + 1)
        calls += 1
    return calls, items, elapsed


def archived_pages(client: httpx.Client) -> list[int]:
    """The numbers of the patient feed's archived pages (before ``recent``)."""
    recent = client.get("/ws/atomfeed/patient/recent")
    recent.raise_for_status()
    root = etree.fromstring(recent.content)
    links = {link.get("rel"): link.get("href") for link in root.iter(f"{ATOM}link")}
    via = links.get("via") or ""
    last = int(via.rstrip("/").rsplit("/", 1)[-1]) if via else 1
    return list(range(1, last))


def feed_bench(client: httpx.Client, seconds: float) -> dict[str, Any]:
    """Pages/s and entries/s reading the archived pages in turn."""
    pages = archived_pages(client)
    if not pages:
        raise SystemExit("the feed has no archived page: import more records than one page holds")

    def step(i: int) -> int:
        response = client.get(f"/ws/atomfeed/patient/{pages[i % len(pages)]}")
        response.raise_for_status()
        return response.content.count(b"<entry>") or response.content.count(b"<entry ")

    calls, entries, elapsed = timed(seconds, step)
    return {
        "archived_pages": len(pages),
        "pages_per_s": round(calls / elapsed, 1),
        "entries_per_s": round(entries / elapsed),
        "entries_per_page": round(entries / calls) if calls else 0,
    }


def id_batch_bench(
    client: httpx.Client, ids: list[str], batch: int, seconds: float
) -> dict[str, Any]:
    """Requests/s and records/s for ``_id`` searches of ``batch`` ids."""
    rng = random.Random(7)

    def step(_i: int) -> int:
        wanted = rng.sample(ids, batch)
        response = client.get("/ws/fhir2/R4/Patient", params={"_id": ",".join(wanted)})
        response.raise_for_status()
        got = {e["resource"]["id"] for e in response.json().get("entry", [])}
        if got != set(wanted):
            raise SystemExit(f"_id search returned {len(got)} of {batch} ids")
        return len(got)

    calls, found, elapsed = timed(seconds, step)
    return {
        "ids_per_request": batch,
        "requests_per_s": round(calls / elapsed, 1),
        "records_per_s": round(found / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="Patients the node holds.")
    parser.add_argument("--page-size", type=int, default=1000, help="Feed entries per page.")
    parser.add_argument("--ids", type=int, default=100, help="Ids per _id search.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each test.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fhirsync-read-bench-") as tmp:
        work = Path(tmp)
        data = generate(work / "patients.ndjson", args.count)
        node = create_node(work, "bench-read", extra_settings={"feed_page_size": args.page_size})
        loaded = time.perf_counter()
        ids = load(node, data)
        load_seconds = time.perf_counter() - loaded
        node.start_process()
        try:
            with httpx.Client(base_url=node.base_url, auth=node.auth, timeout=60.0) as client:
                feed = feed_bench(client, args.seconds)
                batches = id_batch_bench(client, ids, min(args.ids, len(ids)), args.seconds)
        finally:
            node.stop()
    figures = {
        "count": args.count,
        "page_size": args.page_size,
        "load_seconds": round(load_seconds, 1),
        "feed": feed,
        "id_batch": batches,
        **machine(),
    }
    print(f"node holding {args.count:,} Patients (SQLite), served by `fhirsync serve` on loopback")
    print(
        f"  feed: {feed['pages_per_s']} pages/s of {args.page_size} entries "
        f"({feed['entries_per_s']:,} entries/s) over {feed['archived_pages']} archived pages"
    )
    print(
        f"  FHIR _id batches: {batches['requests_per_s']} requests/s of "
        f"{batches['ids_per_request']} ids ({batches['records_per_s']:,} records/s)"
    )
    print(f"  load average {figures['load_average']} on {figures['cpus']} CPUs")
    write_figures(args.out, figures)


if __name__ == "__main__":
    main()
