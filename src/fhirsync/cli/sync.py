"""``fhirsync pull`` and ``fhirsync status``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fhirsync.cli.common import (
    EXIT_FAILURES,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    console,
    handle_errors,
    node_path,
    plain,
)
from fhirsync.cli.progress import RunView

# The work is imported inside each command (see the package docstring: start-up time).
if TYPE_CHECKING:
    from fhirsync.settings import NodeConfig
    from fhirsync.store.conflicts import Conflict
    from fhirsync.store.failures import Failure
    from fhirsync.store.runs import RunState
    from fhirsync.sync.lag import Lag

_VIEW = RunView("pull", "applied", stops_live=True)
_SHOWN = 20  # failures and conflicts listed by status
_DONE_WORD = {"pull": "applied", "push": "sent"}


@handle_errors
def pull(
    node_dir: Annotated[Path, typer.Argument(help="The node directory.")],
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for a pull run already in progress.")
    ] = 300.0,
    include_own_changes: Annotated[
        bool,
        typer.Option(
            "--include-own-changes",
            help="After restoring this node from a backup: also apply changes that began on "
            "this node and reached the parent after the backup (normally skipped: no echo).",
        ),
    ] = False,
) -> None:
    """Pull from the parent once. Exit 0 ok, 1 failures/conflicts, 2 configuration, 3 unreachable.

    Changes kept as conflicts for a person are counted apart from the records applied."""
    from fhirsync.node import open_node
    from fhirsync.sync.runner import run_pull

    config, db = open_node(node_path(node_dir))
    try:
        result = _VIEW.run(
            lambda listener: run_pull(
                config, db, listener=listener, wait=wait, include_own=include_own_changes
            )
        )
    finally:
        db.dispose()
    _VIEW.finish(result)


@handle_errors
def status(node_dir: Annotated[Path, typer.Argument(help="The node directory.")]) -> None:
    """Parent reachability, feed position per category, failures, conflicts and the last runs.

    Exit 0 all well, 1 failures or conflicts await an administrator, 2 the parent refuses this
    node's credentials, 3 the parent is unreachable (for monitoring scripts)."""
    from fhirsync.clients.registry import unknown_preferences
    from fhirsync.node import open_node
    from fhirsync.settings import unused_settings
    from fhirsync.store import conflicts, failures, locks, markers, runs
    from fhirsync.sync import lag
    from fhirsync.sync.scheduler import is_scheduled, overdue_since

    config, db = open_node(node_path(node_dir))
    try:
        parent = config.parent_url
        console.print(
            f"node [bold]{plain(config.instance_id)}[/bold]  parent {plain(parent or '(none)')}"
        )
        for warning in [*unknown_preferences(config), *unused_settings(config)]:
            console.print(f"[yellow]warning:[/yellow] {plain(warning)}")
        reachable = _reachable(config) if parent else "no parent"
        found = lag.gather(config, db, ask_parent=reachable == "yes")
        refused = found.parent_label == lag.CREDENTIALS_REFUSED
        if refused:
            reachable = (
                "yes, but it refuses this node's credentials (parent_user and parent_password "
                "in fhirsync.json; the parent's 'fhirsync user' account)"
            )
        if parent:
            console.print(f"parent reachable: {reachable}", markup=False)
        with db.read() as conn:
            states = {op: runs.get(conn, op) for op in ("pull", "push")}
            positions = markers.for_feed(conn, parent) if parent else {}
            open_counts = failures.open_counts(conn)
            shown = failures.for_review(conn, _SHOWN)
            open_conflicts = conflicts.count_open(conn)
            shown_conflicts = conflicts.list_conflicts(conn, limit=_SHOWN)
        table = Table("category", "last page", "last entry", "updated")
        for category, marker in positions.items():
            table.add_row(
                plain(category),
                str(marker.last_page),
                plain(marker.last_entry_id or ""),
                str(marker.updated_at),
            )
        console.print(table)
        _print_lag(found)
        for operation, state in states.items():
            _print_run(operation, state)
            running = locks.holder(db, operation) is not None
            scheduled = is_scheduled(config, operation)
            due = overdue_since(state, scheduled=scheduled, running=running)
            if due is not None:
                console.print(
                    f"  scheduled {operation} is overdue: due {_when(due)} and not started "
                    "(is 'fhirsync serve' running for this node? another program may hold its "
                    "database locked)"
                )
        if config.recovery_file.exists():
            console.print(
                "restored from a backup: the next complete pull also applies the changes that "
                "began on this node and reached the parent after the backup"
            )
        _print_failures(node_dir, open_counts, shown)
        _print_conflicts(node_dir, open_conflicts, shown_conflicts)
    finally:
        db.dispose()
    if parent and not reachable.startswith("yes"):
        raise typer.Exit(EXIT_UNREACHABLE)
    if refused:
        raise typer.Exit(EXIT_USAGE)
    if open_counts or open_conflicts:
        raise typer.Exit(EXIT_FAILURES)


def _print_failures(
    node_dir: Path, open_counts: dict[tuple[str, str], int], shown: list[Failure]
) -> None:
    """Counts per direction and status, then the most urgent failures."""
    console.print(f"failures: {_failure_counts(open_counts) or 'none'}")
    for f in shown:
        console.print(
            f"  #{f.id} {f.operation} {f.status} {f.category}/{f.record_uuid} {f.action} "
            f"attempts={f.attempts} {f.error_message}",
            markup=False,
        )
    hidden = sum(open_counts.values()) - len(shown)
    if hidden > 0:
        console.print(
            f"  ... and {hidden} more (parked first, newest first above): "
            f"fhirsync audit {node_dir} list --failed"
        )


def _print_conflicts(node_dir: Path, count: int, shown: list[Conflict]) -> None:
    """The open conflicts (newest first), which wait for an administrator's decision."""
    if not count:
        console.print("conflicts: none open")
        return
    console.print(
        f"conflicts: {count} open (resolve with 'fhirsync conflicts {node_dir} resolve' or on "
        "the admin pages)"
    )
    for c in shown:
        console.print(
            f"  {c.uuid} {c.operation.lower()} {c.category}/{c.record_uuid} "
            f"fields: {', '.join(c.paths)}",
            markup=False,
        )
    if count > len(shown):
        console.print(f"  ... and {count - len(shown)} more: fhirsync conflicts {node_dir} list")


def _print_run(operation: str, state: RunState) -> None:
    """The last run of ``operation``: when, what it did, and why it stopped if it did."""
    if state.started_at is None:
        console.print(f"last {operation}: never")
        return
    if state.outcome in (None, "running") or state.finished_at is None:
        console.print(
            f"last {operation}: started {_when(state.started_at)}, not finished (running now, "
            "or its process was stopped; the next run resumes from the marker)"
        )
        return
    console.print(
        f"last {operation}: {state.outcome}, started {_when(state.started_at)}, finished "
        f"{_when(state.finished_at)}; read {state.events_read}, {_DONE_WORD[operation]} "
        f"{state.applied}, failed {state.failed}"
    )
    if state.backoff_seconds:
        console.print(
            f"  scheduler backing off {state.backoff_seconds:.0f}s after "
            f"{state.consecutive_failures} failure(s): {state.last_error}",
            markup=False,
        )
    elif state.last_error:
        console.print(f"  last error: {state.last_error}", markup=False)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _failure_counts(counts: dict[tuple[str, str], int]) -> str:
    """``pull: 3 parked, 1 retrying; push: 2 parked`` (empty when there are none)."""
    by_operation: dict[str, list[str]] = {}
    for (operation, status), count in sorted(counts.items()):
        by_operation.setdefault(operation, []).append(f"{count} {status}")
    return "; ".join(f"{op}: {', '.join(parts)}" for op, parts in by_operation.items())


def _print_lag(found: Lag) -> None:
    """Per category: events behind the parent's feed and local events not yet pushed."""
    if not found.categories:
        return
    table = Table("category", "behind parent", "not yet pushed")
    for row in found.categories:
        remote = row.parent_text if row.pulled else "not pulled"
        if row.pulled and found.parent_label:
            remote = found.parent_label
        table.add_row(
            plain(row.category),
            plain(remote),
            "not pushed" if row.unpushed is None else str(row.unpushed),
        )
    console.print(table)
    if found.parent_error:
        console.print(f"parent lag {found.parent_error}", markup=False)


def _reachable(config: NodeConfig) -> str:
    from fhirsync.sync.lag import check_parent

    status = check_parent(config, timeout=5.0)
    return "yes" if status.reachable else f"no ({status.reason})"


def register(app: typer.Typer) -> None:
    """Add this group's commands."""
    app.command()(pull)
    app.command()(status)
