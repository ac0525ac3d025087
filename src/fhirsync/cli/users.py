"""``fhirsync user add``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fhirsync.cli.common import console, handle_errors, node_path

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
    # Imported here: store.users loads argon2 and the account tables; only this
    # command and init need them (see the package docstring: start-up time).
    from fhirsync.node import open_node
    from fhirsync.store import users

    _config, db = open_node(node_path(node_dir))
    secret = password or users.generate_password()
    try:
        with db.write() as conn:
            users.add(conn, name, secret, role, instance_id)  # type: ignore[arg-type]
    finally:
        db.dispose()
    console.print(f"Created {role} user [bold]{name}[/bold]")
    if password is None:
        console.print(f"Password (shown once, store it now): [bold]{secret}[/bold]")


def register(app: typer.Typer) -> None:
    """Add this group's commands."""
    app.add_typer(user_app, name="user")
