"""``fhirsync conflicts NODE_DIR list|show|resolve``: records both sides changed in one field."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

from fhirsync.cli.common import (
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    console,
    err_console,
    handle_errors,
    node_path,
    plain,
)
from fhirsync.errors import ConfigurationError, InvalidResource

# The work (node, store, merge, push) is imported inside each command (see the package docstring:
# start-up time).
if TYPE_CHECKING:
    from fhirsync.store.conflicts import Conflict
    from fhirsync.store.engine import Database

conflicts_app = typer.Typer(
    help="Conflicts: records this node and its parent changed differently.", no_args_is_help=True
)
NodeDir = Annotated[Path, typer.Argument(help="The node directory.")]


@conflicts_app.callback()
def _node(ctx: typer.Context, node_dir: NodeDir) -> None:
    """``fhirsync conflicts NODE_DIR list|show|resolve`` (DESIGN §3): the node comes first."""
    ctx.obj = node_dir


@conflicts_app.command("list")
@handle_errors
def list_(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Resolved ones too.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown at most (newest first).")] = 200,
) -> None:
    """Open conflicts, newest first (at most --limit; the line below says how many there are)."""
    from fhirsync.node import open_node
    from fhirsync.store import conflicts as conflict_repo

    _config, db = open_node(node_path(ctx.obj))
    try:
        with db.read() as conn:
            status = None if all_ else conflict_repo.OPEN
            # One more than shown: with --all there is no count, and the extra row says "more".
            found = conflict_repo.list_conflicts(conn, status=status, limit=limit + 1)
            total = None if all_ else conflict_repo.count_open(conn)
    finally:
        db.dispose()
    shown = found[:limit]
    table = Table("conflict", "category", "record", "found in", "fields", "status", "updated")
    for c in shown:
        table.add_row(
            c.uuid,
            c.category,
            c.record_uuid,
            c.operation,
            plain(", ".join(c.paths)),
            plain(c.status if not c.resolved_by else f"{c.status} by {c.resolved_by}"),
            str(c.updated_at)[:19],
        )
    console.print(table)
    console.print(_count_line(len(shown), total, more=len(found) > limit), markup=False)


def _count_line(shown: int, total: int | None, *, more: bool) -> str:
    """How many rows the list holds, and how to see the rest when it is cut short."""
    if total is not None:
        if shown < total:
            return f"showing {shown} of {total} open conflict(s); see more with --limit {total}"
        return f"{total} open conflict(s)"
    if more:
        return f"showing the newest {shown} conflict(s); there are more: raise --limit"
    return f"{shown} conflict(s)"


def _shown(value: Any, missing: object) -> str:
    return "(absent)" if value is missing else plain(orjson.dumps(value).decode())


@conflicts_app.command("show")
@handle_errors
def show(
    ctx: typer.Context, conflict: Annotated[str, typer.Argument(help="Conflict uuid.")]
) -> None:
    """Base, local and remote of one conflict, field by field (differing fields only)."""
    from fhirsync.node import open_node
    from fhirsync.sync.merge import MISSING, flatten

    _config, db = open_node(node_path(ctx.obj))
    try:
        found = _known(db, conflict)
    finally:
        db.dispose()
    console.print(
        f"conflict {found.uuid} on {found.category}/{found.record_uuid} ({found.status}); "
        f"conflicting: {', '.join(found.paths)}",
        markup=False,
    )
    base = flatten(found.base() or {})
    local = flatten({**found.local(), "@state": found.local_state})
    remote = flatten({**found.remote(), "@state": found.remote_state})
    base["@state"] = found.base_state or MISSING
    table = Table("field", "base", "local", "remote")
    for path in sorted({*base, *local, *remote}):
        values = [d.get(path, MISSING) for d in (base, local, remote)]
        if values[1] == values[2] and values[0] == values[1]:
            continue
        mark = "[bold red]" if path in found.paths else ""
        table.add_row(f"{mark}{plain(path)}", *(_shown(v, MISSING) for v in values))
    console.print(table)


@conflicts_app.command("resolve")
@handle_errors
def resolve_(
    ctx: typer.Context,
    conflict: Annotated[str, typer.Argument(help="Conflict uuid.")],
    take: Annotated[
        str, typer.Option("--take", help="local, remote, or a JSON FILE holding the record.")
    ],
    push: Annotated[
        bool, typer.Option("--push/--no-push", help="Push to the parent right away.")
    ] = True,
    user: Annotated[str, typer.Option("--user", help="Who resolves it (audit).")] = "cli",
) -> None:
    """Write the chosen version here, send it to the parent as a new version, close the conflict."""
    from fhirsync.node import open_node
    from fhirsync.sync.push_run import run_push
    from fhirsync.sync.reconcile import reconciler_for
    from fhirsync.sync.resolve import find_open, resolve

    config, db = open_node(node_path(ctx.obj))
    try:
        _known(db, conflict)
        find_open(db, conflict)
        reconciler = reconciler_for(config)
        if take in ("local", "remote"):
            done = resolve(db, reconciler, conflict, resolved_by=user, take=take)  # type: ignore[arg-type]
        else:
            done = resolve(db, reconciler, conflict, resolved_by=user, body=_read(take))
        console.print(f"resolved {done.conflict_uuid} ({done.resolution})")
        if push and config.parent_url:
            result = run_push(config, db)
            console.print(f"push {result.outcome}: sent {result.applied}")
            if result.outcome == "unreachable":
                err_console.print("[yellow]the parent is unreachable; the next push sends it[/]")
                raise typer.Exit(EXIT_UNREACHABLE)
    finally:
        db.dispose()
    raise typer.Exit(EXIT_OK)


def _known(db: Database, conflict: str) -> Conflict:
    """The conflict ``conflict`` names (any status); an id that names nothing is a usage error
    (exit 2, DESIGN §3), as for `audit show`. One that is closed already is not: resolve says so
    and exits 1."""
    from fhirsync.store import conflicts as conflict_repo

    with db.read() as conn:
        found = conflict_repo.get(conn, conflict)
    if found is None:
        err_console.print(f"[red]usage:[/red] no conflict {plain(repr(conflict))}")
        raise typer.Exit(EXIT_USAGE)
    return found


def _read(path: str) -> dict[str, Any]:
    from fhirsync import canonical

    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(
            f"--take must be local, remote or a JSON file ({path!r} is none)", field="--take"
        )
    try:
        value = canonical.loads(file.read_bytes())
    except ValueError as exc:
        raise InvalidResource(f"{path} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidResource(f"{path} must hold one JSON object")
    return value


def register(app: typer.Typer) -> None:
    """Add this group's commands."""
    app.add_typer(conflicts_app, name="conflicts")
