"""``fhirsync audit NODE_DIR list|show|retry``: the audit log and failed records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fhirsync.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    console,
    err_console,
    handle_errors,
    node_path,
)
from fhirsync.node import open_node
from fhirsync.store import audit_query, failures
from fhirsync.store.audit_query import AuditFilter
from fhirsync.sync.runner import run_pull

audit_app = typer.Typer(help="The audit log and failed records (spec §7).", no_args_is_help=True)
NodeDir = Annotated[Path, typer.Argument(help="The node directory.")]


@audit_app.callback()
def _node(ctx: typer.Context, node_dir: NodeDir) -> None:
    """``fhirsync audit NODE_DIR list|show|retry`` (DESIGN §3): the node comes first."""
    ctx.obj = node_dir


@audit_app.command("list")
@handle_errors
def list_(
    ctx: typer.Context,
    failed: Annotated[bool, typer.Option("--failed", help="Only failures.")] = False,
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 20,
) -> None:
    """The newest audit rows."""
    _config, db = open_node(node_path(ctx.obj))
    try:
        with db.read() as conn:
            page = audit_query.list_messages(
                conn, AuditFilter(success=False if failed else None), page_size=limit
            )
    finally:
        db.dispose()
    table = Table("uuid", "time", "op", "category", "record", "action", "ok", "details")
    for m in page.items:
        table.add_row(
            m.uuid,
            str(m.timestamp),
            m.operation or "",
            m.resource_name or "",
            m.record_uuid or "",
            m.action or "",
            "yes" if m.success else "no",
            (m.details or "")[:80],
        )
    console.print(table)
    console.print(f"{page.total} row(s)")


@audit_app.command()
@handle_errors
def show(ctx: typer.Context, uuid: Annotated[str, typer.Argument(help="Audit row uuid.")]) -> None:
    """One audit row with every field."""
    _config, db = open_node(node_path(ctx.obj))
    try:
        with db.read() as conn:
            message = audit_query.get_message(conn, uuid)
    finally:
        db.dispose()
    if message is None:
        err_console.print(f"no audit row {uuid}")
        raise typer.Exit(EXIT_FAILURES)
    for name in message.__dataclass_fields__:
        console.print(f"{name}: {getattr(message, name)}")


@audit_app.command()
@handle_errors
def retry(
    ctx: typer.Context,
    failure_id: Annotated[
        int | None, typer.Argument(help="Id of one parked failure (see status); all if omitted.")
    ] = None,
) -> None:
    """Retry parked failures now (they get a fresh set of attempts), then pull."""
    config, db = open_node(node_path(ctx.obj))
    try:
        with db.write() as conn:
            count = failures.requeue(conn, [failure_id] if failure_id is not None else None)
        console.print(f"requeued {count} parked failure(s)")
        result = run_pull(config, db, wait=300.0)
        with db.read() as conn:
            still = failures.counts(conn, "pull")
    finally:
        db.dispose()
    console.print(
        f"pull {result.outcome}: applied {result.applied}; open failures {still or 'none'}"
    )
    if result.outcome == "unreachable":
        err_console.print(f"[red]parent unreachable:[/red] {result.error}")
        raise typer.Exit(3)
    # A retried record that failed again is a failure of this command, even if it is not parked
    # yet (requeueing gave it a fresh set of attempts).
    failed = result.outcome == "failures" or bool(still.get("parked"))
    raise typer.Exit(EXIT_FAILURES if failed else EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add this group's commands."""
    app.add_typer(audit_app, name="audit")
