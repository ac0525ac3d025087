"""``fhirsync push NODE_DIR``: one push run now, whatever ``push.enabled`` says."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fhirsync.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_UNREACHABLE,
    console,
    err_console,
    handle_errors,
    node_path,
)
from fhirsync.node import open_node
from fhirsync.sync.push_run import run_push
from fhirsync.sync.status import RecordFailed, RunEvent, RunFinished, RunProgress

_EXIT = {"ok": EXIT_OK, "failures": EXIT_FAILURES, "busy": EXIT_FAILURES}


@handle_errors
def push(node_dir: Annotated[Path, typer.Argument(help="The node directory.")]) -> None:
    """Push this node's changes to its parent once.

    Exit 0 ok, 1 failures recorded (or another push run busy), 2 configuration, 3 unreachable.
    """
    config, db = open_node(node_path(node_dir))
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("read {task.fields[read]}  sent {task.fields[sent]}"),
            TextColumn("failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task("push", total=None, read=0, sent=0, failed=0)
            done: dict[str, tuple[int, int]] = {}
            failed = [0]

            def show(event: RunEvent) -> None:
                if isinstance(event, RunProgress):
                    done[event.category] = (event.done, event.applied)
                    progress.update(
                        task,
                        description=event.category,
                        total=event.total,
                        completed=event.done,
                        read=sum(d for d, _ in done.values()),
                        sent=sum(s for _, s in done.values()),
                    )
                elif isinstance(event, RecordFailed):
                    failed[0] += 1
                    progress.update(task, failed=failed[0])
                elif isinstance(event, RunFinished):
                    progress.update(task, read=event.events_read, sent=event.applied)

            result = run_push(config, db, listener=show)
    finally:
        db.dispose()
    if result.outcome == "unreachable":
        err_console.print(f"[red]parent unreachable:[/red] {result.error}")
        raise typer.Exit(EXIT_UNREACHABLE)
    if result.outcome == "busy":
        console.print(f"push skipped: {result.error}")
    else:
        console.print(
            f"push {result.outcome}: {result.events_read} events read, {result.applied} records "
            f"sent, {result.failures} failed in {result.seconds:.1f}s"
            + (f" ({result.error})" if result.error else "")
        )
    raise typer.Exit(_EXIT[result.outcome])


def register(app: typer.Typer) -> None:
    """Add ``push`` to the command line."""
    app.command("push")(push)
