"""``fhirsync import`` and ``fhirsync seed``: loading data into a node."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fhirsync import categories
from fhirsync.cli.common import (
    EXIT_FAILURES,
    EXIT_USAGE,
    console,
    err_console,
    handle_errors,
    node_path,
    plain,
)

# The work is imported inside each command (see the package docstring: start-up time): the
# importer and the seeder load the FHIR validators.
if TYPE_CHECKING:
    from fhirsync.service import importer
    from fhirsync.settings import NodeConfig
    from fhirsync.store.engine import Database

# importer.BATCH_SIZE, which the option's help shows before the importer is loaded
# (tests/unit/cli/test_startup.py checks that they agree).
IMPORT_BATCH_SIZE = 1000


@handle_errors
def import_(
    node_dir: Annotated[Path, typer.Argument(help="The node directory.")],
    file: Annotated[
        Path, typer.Argument(help="NDJSON file: one FHIR R4 resource per line (UTF-8, or gzip).")
    ],
    workers: Annotated[
        int | None,
        typer.Option(help="Validation processes (default: one per CPU; 1 validates inline)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Records written per transaction.")
    ] = IMPORT_BATCH_SIZE,
) -> None:
    """Bulk-load FHIR resources. Exit 0 ok, 1 if any line was rejected, 2 bad node or file."""
    from fhirsync.node import open_node
    from fhirsync.service import importer

    if not file.is_file():
        if file.is_dir():
            reason = "is a directory"
        elif file.exists():  # a pipe (/dev/stdin, <(zcat ...)): import reads a file's size
            reason = "is not a regular file: save the data to a file (gzip is read as it is)"
        else:
            reason = "no such file"
        err_console.print(f"[red]error:[/red] {plain(file)}: {reason}")
        raise typer.Exit(EXIT_USAGE)
    config, db = open_node(node_path(node_dir))
    try:
        with Progress(
            TextColumn("import"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[written]} records, {task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
        ) as progress:
            task = progress.add_task("import", total=None, written=0, failed=0)

            def show(state: importer.Progress) -> None:
                progress.update(
                    task,
                    completed=state.bytes_done,
                    total=state.bytes_total,
                    written=state.written,
                    failed=state.failed,
                )

            def report(error: importer.LineError) -> None:
                where = f" {error.element}:" if error.element else ""
                err_console.print(f"line {error.line}:{where} {error.message}", markup=False)

            result = importer.import_file(
                db,
                file,
                config.instance_id,
                workers=workers,
                batch_size=batch_size,
                on_progress=show,
                on_error=report,
            )
        rechecked = _recheck_conflicts(config, db)
    finally:
        db.dispose()
    console.print(_counts_table(dict(result.counts)))
    console.print(
        f"imported {result.imported} records ({result.unchanged} unchanged), "
        f"{result.failed} lines failed, in {result.seconds:.1f}s ({result.rate:,.0f} records/s)"
    )
    _say_rechecked(rechecked)
    if result.failed:
        raise typer.Exit(EXIT_FAILURES)


@handle_errors
def seed_(
    node_dir: Annotated[Path, typer.Argument(help="The node directory.")],
    patients: Annotated[int, typer.Option(min=0, help="Number of patients to create.")] = 100,
    seed_value: Annotated[
        int, typer.Option("--seed", help="Random seed: the same seed gives the same records.")
    ] = 1,
) -> None:
    """Create deterministic, realistic clinic data (patients, visits, encounters, vitals)."""
    from fhirsync.node import open_node
    from fhirsync.service import seed

    config, db = open_node(node_path(node_dir))
    try:
        with console.status("seeding", spinner="dots", refresh_per_second=4):
            result = seed.seed_node(db, config.instance_id, patients, seed_value)
        rechecked = _recheck_conflicts(config, db)
    finally:
        db.dispose()
    console.print(_counts_table(result.counts))
    total = sum(result.counts.values())
    console.print(f"seeded {total} records ({result.changed} new or changed)")
    _say_rechecked(rechecked)


def _recheck_conflicts(config: NodeConfig, db: Database) -> int:
    """Decide open conflicts again after local writes outside the API (as the API does after its
    own): one read when there are none."""
    from fhirsync.sync.reconcile import recheck_local, reconciler_for

    return recheck_local(db, reconciler_for(config))


def _say_rechecked(count: int) -> None:
    if count:
        console.print(f"{count} open conflicts decided again against the written records")


def _counts_table(counts: dict[str, int]) -> Table:
    table = Table("category", "records")
    for category in sorted(counts, key=lambda name: categories.ORDER.get(name, 1_000)):
        table.add_row(category, str(counts[category]))
    return table


def register(app: typer.Typer) -> None:
    """Add this group's commands."""
    app.command("import")(import_)
    app.command("seed")(seed_)
