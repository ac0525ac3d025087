"""``fhirsync demo``: a three-level network on loopback, seeded, synced, and shown.

    parent ── child-a ── grandchild-a1
           └─ child-b

The parent is seeded with clinic data; the children pull it; then several nodes change records and
the network syncs in rounds (push leaves-first, pull top-down) until a round moves nothing. Tables
show what each node holds, the failures, the time taken, and whether every node agrees.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fhirsync import categories
from fhirsync.cli.common import EXIT_FAILURES, console, handle_errors

# Imported inside the functions: the demo network loads the server, uvicorn and the sync engine,
# which no other command needs (see the package docstring: start-up time).
if TYPE_CHECKING:
    from fhirsync.testing.network import Network

FHIR = "/ws/fhir2/R4"


def _counts(net: Network) -> dict[str, dict[str, int]]:
    """Active records per category, per node."""
    from fhirsync.store import records

    out: dict[str, dict[str, int]] = {}
    for name, handle in net.nodes.items():
        _config, db = handle.open()
        try:
            with db.read() as conn:
                by_state = records.counts_by_category(conn)
        finally:
            db.dispose()
        out[name] = {cat: states.get("active", 0) for cat, states in by_state.items()}
    return out


def _counts_table(title: str, net: Network) -> Table:
    counts = _counts(net)
    names = list(net.nodes)
    table = Table(*["category", *names], title=title)
    used = {cat for per_node in counts.values() for cat in per_node}
    for cat in sorted(used, key=lambda c: categories.ORDER.get(c, 999)):
        table.add_row(cat, *(str(counts[n].get(cat, 0)) for n in names))
    table.add_row("[bold]total", *(f"[bold]{sum(counts[n].values())}" for n in names))
    return table


def _change_records(net: Network) -> str:
    """Edits on several nodes: creates on leaves, an update on child-b, a void on the parent."""
    from fhirsync.testing.network import create_patient, sync_until_quiet

    traveller = create_patient(net.nodes["grandchild-a1"], "Traveller", "Grace")
    create_patient(net.nodes["child-b"], "Mensah", "Kwame")
    create_patient(net.nodes["child-a"], "Okafor", "Ada")
    sync_until_quiet(net)
    with net.nodes["child-b"].client() as client:
        body = client.get(f"{FHIR}/Patient/{traveller}").json()
        body["telecom"] = [{"system": "phone", "value": "+254 700 000 111", "use": "mobile"}]
        client.put(f"{FHIR}/Patient/{traveller}", json=body).raise_for_status()
    with net.nodes["parent"].client() as client:
        found = client.get(f"{FHIR}/Patient", params={"_count": 1}).json()
        victim = found["entry"][0]["resource"]["id"]
        client.delete(f"{FHIR}/Patient/{victim}").raise_for_status()
    return traveller


@handle_errors
def demo(
    patients: Annotated[int, typer.Option(min=1, help="Patients seeded on the parent.")] = 50,
    keep: Annotated[
        bool, typer.Option(help="Keep the nodes running until Ctrl-C (to explore /sync2/).")
    ] = False,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to create the nodes (a temp dir if omitted)."),
    ] = None,
) -> None:
    """Start a parent, two children and a grandchild on 127.0.0.1; seed, sync, show the result."""
    from fhirsync.service import seed
    from fhirsync.testing.network import (
        all_agree,
        build_network,
        event_count,
        sync_round,
        sync_until_quiet,
    )

    root = directory or Path(tempfile.mkdtemp(prefix="fhirsync-demo-"))
    started = time.monotonic()
    console.print(f"Creating four nodes in {root} ...")
    net = build_network(root)
    try:
        table = Table("node", "parent", "URL", "admin password", title="Nodes")
        for name, handle in net.nodes.items():
            table.add_row(name, net.parent_of[name] or "-", handle.base_url, handle.admin_password)
        console.print(table)
        _config, db = net.nodes["parent"].open()
        try:
            result = seed.seed_node(db, "parent", patients)
        finally:
            db.dispose()
        console.print(f"Seeded the parent with {sum(result.counts.values())} records.")
        first = time.monotonic()
        pulled = sync_round(net)
        console.print(f"First pull round: {time.monotonic() - first:.1f} s")
        console.print(_counts_table("Records per category after the first pull", net))
        failures = sum(r.failures for r in pulled.pulls.values())
        _change_records(net)
        rounds = sync_until_quiet(net)
        agree = all_agree(net)
        console.print(_counts_table("After edits on four nodes and sync rounds", net))
        summary = Table("node", "events in log", title="Event logs (bounded: no echo)")
        for name, handle in net.nodes.items():
            summary.add_row(name, str(event_count(handle)))
        console.print(summary)
        console.print(
            f"Failures: {failures}. Rounds to quiescence: {rounds}. "
            f"All nodes agree: [bold]{'yes' if agree else 'NO'}[/bold]. "
            f"Total time {time.monotonic() - started:.1f} s."
        )
        if keep:
            console.print("Nodes keep running; open a URL above + /sync2/ . Ctrl-C stops them.")
            while True:
                time.sleep(3600)
        if not agree or failures:
            raise typer.Exit(EXIT_FAILURES)
    except KeyboardInterrupt:
        console.print("Stopping.")
    finally:
        net.stop()


def register(app: typer.Typer) -> None:
    """Add this group's commands."""
    app.command()(demo)
