"""``fhirsync user add|list|password|remove``: the accounts of a node."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fhirsync.cli.common import console, handle_errors, node_path, plain

if TYPE_CHECKING:
    from fhirsync.settings import NodeConfig
    from fhirsync.store.engine import Database

user_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)


@user_app.command("add")
@handle_errors
def add(
    node_dir: Annotated[Path, typer.Argument(help="The node directory.")],
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="admin, viewer or child.")],
    instance_id: Annotated[
        str | None, typer.Option("--instance-id", help="For a child account: its instance id.")
    ] = None,
    password: Annotated[str | None, typer.Option(help="Password (generated if omitted).")] = None,
) -> None:
    """Create a user; a child account is bound to its instance id."""
    # Imported here: store.users loads argon2 and the account tables; only the user commands
    # and init need them (see the package docstring: start-up time).
    from fhirsync.store import users

    secret = password or users.generate_password()
    with _node(node_dir) as (config, db), db.write() as conn:
        users.add(
            conn,
            name,
            secret,
            role,  # type: ignore[arg-type]
            instance_id,
            node_instance_id=config.sync2.general.local_instance_id,
        )
    console.print(f"Created {role} user [bold]{plain(name)}[/bold]")
    _show_generated(password, secret)


@user_app.command("list")
@handle_errors
def list_users(node_dir: Annotated[Path, typer.Argument(help="The node directory.")]) -> None:
    """Every account: name, role and, for a child account, its instance id."""
    from rich.table import Table

    from fhirsync.store import users

    with _database(node_dir) as db, db.read() as conn:
        accounts = users.list_all(conn)
    table = Table("name", "role", "instance id")
    for user in accounts:
        table.add_row(plain(user.name), user.role, plain(user.instance_id or ""))
    console.print(table)
    # Accounts made before `user add` refused shared instance ids: the binding of the whitelist
    # and of pushed origins to an account means nothing while two accounts share one.
    sharing: dict[str, list[str]] = {}
    for user in accounts:
        if user.role == "child" and user.instance_id:
            sharing.setdefault(user.instance_id, []).append(user.name)
    for instance_id, names in sharing.items():
        if len(names) > 1:
            console.print(
                f"[yellow]warning:[/yellow] child accounts {plain(', '.join(names))} share the "
                f"instance id {instance_id!r} and can act as each other: remove all but one "
                "(fhirsync user remove)"
            )


@user_app.command("password")
@handle_errors
def password(
    node_dir: Annotated[Path, typer.Argument(help="The node directory.")],
    name: Annotated[str, typer.Argument(help="User name.")],
    new_password: Annotated[
        str | None, typer.Option("--password", help="The new password (generated if omitted).")
    ] = None,
) -> None:
    """Set a new password (a running server refuses the old one within seconds)."""
    from fhirsync.store import users

    secret = new_password or users.generate_password()
    with _database(node_dir) as db, db.write() as conn:
        users.set_password(conn, name, secret)
    console.print(f"New password set for [bold]{plain(name)}[/bold]")
    _show_generated(new_password, secret)


@user_app.command("remove")
@handle_errors
def remove(
    node_dir: Annotated[Path, typer.Argument(help="The node directory.")],
    name: Annotated[str, typer.Argument(help="User name.")],
) -> None:
    """Delete an account (a running server refuses it within seconds; the last admin stays)."""
    from fhirsync.store import users

    with _database(node_dir) as db, db.write() as conn:
        user = users.remove(conn, name)
    console.print(f"Removed {user.role} user [bold]{plain(name)}[/bold]")


@contextmanager
def _database(node_dir: Path) -> Iterator[Database]:
    with _node(node_dir) as (_config, db):
        yield db


@contextmanager
def _node(node_dir: Path) -> Iterator[tuple[NodeConfig, Database]]:
    from fhirsync.node import open_node

    config, db = open_node(node_path(node_dir))
    try:
        yield config, db
    finally:
        db.dispose()


def _show_generated(given: str | None, secret: str) -> None:
    if given is None:
        console.print(f"Password (shown once, store it now): [bold]{secret}[/bold]")


def register(app: typer.Typer) -> None:
    """Add this group's commands."""
    app.add_typer(user_app, name="user")
