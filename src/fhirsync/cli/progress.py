"""What `fhirsync pull` and `fhirsync push` show of a run: progress bar, result line, exit code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from fhirsync.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    console,
    err_console,
    plain,
)
from fhirsync.sync.status import (
    CategoryStopped,
    Listener,
    RecordFailed,
    RunEvent,
    RunFinished,
    RunProgress,
)

_STOPS_SHOWN = 3
"""Categories stopped by the same kind of error that are named one by one."""

# A busy run (another one holds the lock) did nothing this time: the contract's "failures" code.
# "stopped" comes only from serve's scheduler (a stop asked for); mapped so no outcome lacks a code.
_EXIT = {"ok": EXIT_OK, "failures": EXIT_FAILURES, "busy": EXIT_FAILURES, "stopped": EXIT_FAILURES}


@dataclass(frozen=True, slots=True)
class RunView:
    """One run command's way of showing a run."""

    operation: str
    """The command and the bar's first label: ``pull`` or ``push``."""
    moved: str
    """What a record that got through is called: ``applied`` (pull) or ``sent`` (push)."""
    stops_live: bool
    """Print each stopped category on stderr as it stops; otherwise the run's error, if any,
    ends the result line instead."""

    def run(self, start: Callable[[Listener], RunFinished]) -> RunFinished:
        """Call ``start`` with a listener that draws the run on a terminal (nothing otherwise)."""
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn(f"read {{task.fields[read]}}  {self.moved} {{task.fields[moved]}}"),
            TextColumn("failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task(self.operation, total=None, read=0, moved=0, failed=0)
            return start(_Tally(self, progress, task).show)

    def finish(self, result: RunFinished) -> NoReturn:
        """Print the run's result line and exit with the contract's code (DESIGN.md §3)."""
        if result.outcome == "unreachable":
            err_console.print(f"[red]parent unreachable:[/red] {plain(result.error)}")
            raise typer.Exit(EXIT_UNREACHABLE)
        if result.outcome == "configuration":
            err_console.print(
                f"[red]configuration error:[/red] {plain(result.error)} (parent_user and "
                "parent_password in fhirsync.json; the parent's 'fhirsync user' account)"
            )
            raise typer.Exit(EXIT_USAGE)
        if result.outcome == "busy":
            console.print(f"{self.operation} skipped: {result.error}", markup=False)
        else:
            error = f" ({result.error})" if result.error and not self.stops_live else ""
            kept = f", {result.conflicts} conflict(s) kept for a person" if result.conflicts else ""
            console.print(
                f"{self.operation} {result.outcome}: {result.events_read} events read, "
                f"{result.applied} records {self.moved}, {result.failures} failed{kept} in "
                f"{result.seconds:.1f}s{error}",
                markup=False,
            )
        if result.conflicts:
            console.print("resolve them with: fhirsync conflicts NODE_DIR list", markup=False)
        # A conflict waits for an administrator, as a parked failure does (`status` exits 1).
        code = _EXIT[result.outcome]
        raise typer.Exit(EXIT_FAILURES if result.conflicts and code == EXIT_OK else code)


class _Tally:
    """The run's counts so far, drawn on the bar as events arrive."""

    def __init__(self, view: RunView, progress: Progress, task: TaskID) -> None:
        self._view, self._progress, self._task = view, progress, task
        # RunProgress counts are per category: keep each category's latest to sum the run's.
        self._done: dict[str, tuple[int, int]] = {}
        self._failed = 0
        self._stops: dict[str, int] = {}

    def show(self, event: RunEvent) -> None:
        """Draw one run event."""
        if isinstance(event, RunProgress):
            self._done[event.category] = (event.done, event.applied)
            self._progress.update(
                self._task,
                description=event.category,
                total=event.total,
                completed=event.done,
                read=sum(d for d, _ in self._done.values()),
                moved=sum(a for _, a in self._done.values()),
            )
        elif isinstance(event, RecordFailed):
            self._failed += 1
            self._progress.update(self._task, failed=self._failed)
        elif isinstance(event, CategoryStopped) and self._view.stops_live:
            # A wrong parent URL stops every category the same way: a few lines say it.
            seen = self._stops[event.error_class] = self._stops.get(event.error_class, 0) + 1
            if seen <= _STOPS_SHOWN:
                err_console.print(
                    f"[red]category {plain(event.category)} stopped:[/red] "
                    f"{event.error_class}: {plain(event.message)}"
                )
        elif isinstance(event, RunFinished):
            self._progress.update(self._task, read=event.events_read, moved=event.applied)
            for error_class, seen in self._stops.items():
                if seen > _STOPS_SHOWN:
                    err_console.print(
                        f"[red]... and {seen - _STOPS_SHOWN} more categories stopped with "
                        f"{error_class}[/red]"
                    )
