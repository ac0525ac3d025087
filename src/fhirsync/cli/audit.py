"""``fhirsync audit NODE_DIR list|show|retry|dismiss``: the audit pages' work in the terminal.

The filters, the plain-words errors and the retry and dismiss operations are the ones of the admin
pages (``server/audit_view.py`` and ``sync/manual.py``), so both surfaces agree.
Exit codes: 0 done, 1 something failed (again), 2 bad usage or configuration, 3 parent unreachable.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from fhirsync.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    console,
    err_console,
    handle_errors,
    node_path,
    plain,
)
from fhirsync.errors import FhirsyncError, RequestError

# The work is imported inside each command (see the package docstring: start-up time).
if TYPE_CHECKING:
    from fhirsync.server.audit_view import Filters
    from fhirsync.settings import NodeConfig
    from fhirsync.store.audit_query import AuditMessage
    from fhirsync.store.engine import Database
    from fhirsync.sync.manual import Outcome

audit_app = typer.Typer(help="The audit log and failed records (spec §7).", no_args_is_help=True)
NodeDir = Annotated[Path, typer.Argument(help="The node directory.")]

Status = Annotated[
    str, typer.Option("--status", help="SUCCESS, FAILURE or ALL.", case_sensitive=False)
]
Operation = Annotated[str, typer.Option("--operation", help="PULL, PUSH or ALL.")]
Category = Annotated[str, typer.Option("--category", help="Category (resource name).")]
Origin = Annotated[str, typer.Option("--origin", help="Instance id that recorded the message.")]
Since = Annotated[str, typer.Option("--since", help="From this UTC time (ISO 8601), inclusive.")]
Until = Annotated[str, typer.Option("--until", help="Before this UTC time (ISO 8601).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@audit_app.callback()
def _node(ctx: typer.Context, node_dir: NodeDir) -> None:
    """``fhirsync audit NODE_DIR list|show|retry|dismiss`` (DESIGN §3): the node comes first."""
    ctx.obj = node_dir


def _open(ctx: typer.Context) -> tuple[NodeConfig, Database]:
    from fhirsync.node import open_node

    return open_node(node_path(ctx.obj))


def _filters(
    status: str, operation: str, category: str, origin: str, since: str, until: str
) -> Filters:
    """The page's filters; a bad value is a usage error naming the option."""
    from fhirsync.server.audit_view import Filters

    if status.upper() not in ("ALL", "SUCCESS", "FAILURE"):
        raise RequestError(f"--status must be SUCCESS, FAILURE or ALL, not {status!r}")
    if operation.upper() not in ("ALL", "PULL", "PUSH"):
        raise RequestError(f"--operation must be PULL, PUSH or ALL, not {operation!r}")
    filters = Filters(status.upper(), operation.upper(), category, origin, since, until)
    try:
        filters.to_filter()
    except RequestError as exc:
        raise RequestError(f"{exc.message} (--since/--until take ISO 8601)") from exc
    return filters


def _usage(exc: FhirsyncError) -> typer.Exit:
    """A usage error (exit 2, DESIGN §3): a bad option, or an id that names nothing."""
    err_console.print(f"[red]usage:[/red] {plain(exc.message)}")
    return typer.Exit(EXIT_USAGE)


def _json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _status_word(m: AuditMessage) -> str:
    if m.success:
        return "ok"
    if m.merge_conflict_uuid:
        return "conflict"
    if m.error_class == "Dismissed":
        return "dismissed"
    return "FAILED" + (" (followed up)" if m.next_message_uuid else "")


@audit_app.command("list")
@handle_errors
def list_(
    ctx: typer.Context,
    status: Status = "ALL",
    failed: Annotated[
        bool, typer.Option("--failed", help="Only failures (--status FAILURE).")
    ] = False,
    operation: Operation = "ALL",
    category: Category = "",
    origin: Origin = "",
    since: Since = "",
    until: Until = "",
    page: Annotated[int, typer.Option(min=1, help="Page number (1 = newest).")] = 1,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows per page.")] = 20,
    as_json: AsJson = False,
) -> None:
    """Audit messages, newest first, with the filters and pages of the audit page."""
    from fhirsync.store import audit_query

    try:
        filters = _filters(
            "FAILURE" if failed else status, operation, category, origin, since, until
        )
    except RequestError as exc:
        raise _usage(exc) from exc
    _config, db = _open(ctx)
    try:
        with db.read() as conn:
            listing = audit_query.list_messages(
                conn, filters.to_filter(), page=page, page_size=limit
            )
    finally:
        db.dispose()
    if as_json:
        body = {
            "total": listing.total,
            "page": listing.page,
            "pages": listing.page_count,
            "results": [asdict(m) for m in listing.items],
        }
        console.print_json(json.dumps(body, default=_json_default))
        return
    table = Table(
        "uuid", "time (UTC)", "op", "category", "record", "action", "origin", "status", "error"
    )
    for m in listing.items:
        table.add_row(
            *(
                plain(cell)
                for cell in (
                    m.uuid,
                    m.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
                    m.operation or "",
                    m.resource_name or "",
                    m.record_uuid or "",
                    m.action or "",
                    m.creator_instance_id or "",
                    _status_word(m),
                    m.error_class or "",
                )
            )
        )
    console.print(table)
    console.print(
        f"{listing.total} message(s), page {listing.page} of {listing.page_count}"
        + (f" (next: --page {listing.page + 1})" if listing.page < listing.page_count else "")
    )


@audit_app.command()
@handle_errors
def show(
    ctx: typer.Context,
    uuid: Annotated[str, typer.Argument(help="Audit message uuid.")],
    as_json: AsJson = False,
) -> None:
    """One audit message with every field (spec §9), the error in plain words and its links."""
    from fhirsync.server.audit_view import plain_error
    from fhirsync.store import audit_query

    _config, db = _open(ctx)
    try:
        with db.read() as conn:
            message = audit_query.get_message(conn, uuid)
            previous = audit_query.previous_message(conn, uuid)
    finally:
        db.dispose()
    if message is None:
        # An id that names nothing is a usage error (2), as for `conflicts show`.
        err_console.print(f"[red]usage:[/red] no audit message {plain(uuid)}")
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        body = {**asdict(message), "plainError": plain_error(message)}
        body["previousMessageUuid"] = previous.uuid if previous else None
        console.print_json(json.dumps(body, default=_json_default))
        return
    words = plain_error(message)
    console.print(f"status: {_status_word(message)}")
    if words:
        console.print(f"what went wrong: {words}", markup=False)
    for name in message.__dataclass_fields__:
        value = getattr(message, name)
        console.print(f"{name}: {'' if value is None else value}", markup=False)
    if previous is not None:
        console.print(f"follows up: {previous.uuid}")


def _exit_for(outcomes: list[Outcome], failed_again: int) -> int:
    if any("could not be reached" in o.message for o in outcomes):
        return EXIT_UNREACHABLE
    return EXIT_FAILURES if failed_again or not all(o.ok for o in outcomes) else EXIT_OK


@audit_app.command()
@handle_errors
def retry(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(
            help="An audit message uuid, or the number of an open failure (see status). "
            "Without it: every failed message matching the filters, or, with no filter, "
            "every parked failure."
        ),
    ] = None,
    operation: Operation = "ALL",
    category: Category = "",
    origin: Origin = "",
    since: Since = "",
    until: Until = "",
) -> None:
    """Retry failed records now (after fixing the cause), as the audit page's Retry does."""
    from fhirsync.sync import manual

    try:
        filters = _filters("FAILURE", operation, category, origin, since, until)
    except RequestError as exc:
        raise _usage(exc) from exc
    config, db = _open(ctx)
    try:
        if target is not None:
            try:
                outcome = (
                    manual.retry_failure(config, db, int(target.lstrip("#")))
                    if target.lstrip("#").isascii() and target.lstrip("#").isdigit()
                    else manual.retry_message(config, db, target)
                )
            except manual.NotFound as exc:
                raise _usage(exc) from exc
            except manual.Unavailable as exc:
                err_console.print(f"[red]not retried:[/red] {plain(exc.message)}")
                raise typer.Exit(EXIT_FAILURES) from exc
            console.print(outcome.message, markup=False)
            if outcome.new_message_uuid:
                console.print(f"new message: {outcome.new_message_uuid}")
            raise typer.Exit(_exit_for([outcome], 0))
        # The status filter is always FAILURE here: only the other options narrow the retry.
        if operation.upper() != "ALL" or any((category, origin, since, until)):
            totals = manual.retry_matching(config, db, filters.to_filter())
            for run in totals.runs:
                console.print(run.message, markup=False)
            console.print(
                f"retried {totals.messages} failed message(s): {totals.succeeded} succeeded, "
                f"{totals.failed} failed again"
            )
            raise typer.Exit(_exit_for(totals.runs, totals.failed))
        raise typer.Exit(_retry_parked(config, db))
    finally:
        db.dispose()


def _retry_parked(config: NodeConfig, db: Database) -> int:
    """Every parked failure gets a fresh set of tries; one run per direction that has some."""
    from fhirsync.store import failures
    from fhirsync.sync import manual

    manual.require_parent(config)  # before the count is printed: nothing will be retried
    outcomes: list[Outcome] = []
    with db.read() as conn:
        parked = {op: failures.list_open(conn, op, "parked") for op in ("pull", "push")}
    console.print(f"retrying {sum(len(v) for v in parked.values())} parked failure(s)")
    for operation, rows in parked.items():
        if rows or operation == "pull":
            outcome = manual.describe(manual.run_retry(config, db, operation, [f.id for f in rows]))
            console.print(outcome.message, markup=False)
            outcomes.append(outcome)
    with db.read() as conn:
        still = {op: failures.counts(conn, op) for op in ("pull", "push")}
    console.print(f"open failures: {({k: v for k, v in still.items() if v}) or 'none'}")
    # A retried record that failed again is a failure of this command, even if it is not parked
    # yet (a retry gives it a fresh set of attempts).
    again = sum(n.get("parked", 0) + n.get("retrying", 0) for n in still.values())
    return _exit_for(outcomes, again)


@audit_app.command()
@handle_errors
def dismiss(
    ctx: typer.Context,
    failure_id: Annotated[int, typer.Argument(help="Number of the open failure (see status).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")],
    user: Annotated[str, typer.Option("--user", help="Who decides (kept in the audit).")] = "cli",
) -> None:
    """Give up on a failed record: it is not retried again; the reason is kept in the audit."""
    from fhirsync.sync import manual

    config, db = _open(ctx)
    try:
        outcome = manual.dismiss_failure(config, db, failure_id, reason, user)
    except manual.NotFound as exc:
        raise _usage(exc) from exc
    finally:
        db.dispose()
    console.print(outcome.message, markup=False)
    if outcome.new_message_uuid:
        console.print(f"audit message: {outcome.new_message_uuid}")


def register(app: typer.Typer) -> None:
    """Add this group's commands."""
    app.add_typer(audit_app, name="audit")
