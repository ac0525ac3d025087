"""``fhirsync init`` and ``fhirsync serve``."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Annotated

import typer

from fhirsync.cli.common import console, handle_errors, node_path, plain, setup_logging
from fhirsync.errors import ConfigurationError


@handle_errors
def init(
    node_dir: Annotated[Path, typer.Argument(help="Directory to create the node in.")],
    instance_id: Annotated[str, typer.Option("--instance-id", help="This node's id.")],
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8080,
    parent: Annotated[str | None, typer.Option(help="The parent's base URL.")] = None,
    parent_user: Annotated[str | None, typer.Option(help="User name at the parent.")] = None,
    parent_password: Annotated[str | None, typer.Option(help="Password at the parent.")] = None,
    admin_password: Annotated[
        str | None, typer.Option(help="Password of the admin user (generated if omitted).")
    ] = None,
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the database.")] = None,
) -> None:
    """Create a node: sync2.json, fhirsync.json, the database and the admin user."""
    # Imported here, as every command's work is (see the package docstring: start-up time).
    from fhirsync.node import init_node
    from fhirsync.settings import redacted_url

    result = init_node(
        node_path(node_dir),
        instance_id=instance_id,
        port=port,
        parent=parent,
        parent_user=parent_user,
        parent_password=parent_password,
        admin_password=admin_password,
        db_url=db,
    )
    console.print(f"Created node [bold]{instance_id}[/bold] in {plain(result.config.node_dir)}")
    console.print(f"Database: {redacted_url(result.config.db_url)}", markup=False)
    if result.password_generated:
        console.print("Admin user: [bold]admin[/bold]")
        console.print(
            f"Admin password (shown once, store it now): [bold]{result.admin_password}[/bold]"
        )


@handle_errors
def serve(node_dir: Annotated[Path, typer.Argument(help="The node directory.")]) -> None:
    """Serve the node: FHIR, REST, feeds, the admin UI, and scheduled pull/push."""
    # Imported here: uvicorn and the FastAPI app cost about 300 ms and only `serve` needs them.
    import uvicorn

    from fhirsync import categories
    from fhirsync.node import open_node
    from fhirsync.server.app import create_app
    from fhirsync.service import validation

    config, db = open_node(node_path(node_dir))
    setup_logging(config.settings.log_level)
    app = create_app(config, db)
    # Before the first request, not during it: ~0.1 s a resource type.
    validation.prepare(c.fhir_type for c in categories.all_categories() if c.fhir_type)
    try:
        # Bound here rather than by uvicorn, which reports a port in use with its own exit
        # status 3: that code means "parent unreachable" in our command line (DESIGN §3).
        listening = _listening_socket(config.settings.host, config.settings.port)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level=config.settings.log_level.lower(),
                access_log=False,
                # Forwarded headers are honoured by our own trusted_proxies check; uvicorn's
                # would replace the proxy's address with X-Forwarded-For before that check.
                proxy_headers=False,
            )
        )
        with listening:
            host, port = config.settings.host, config.settings.port
            console.print(f"Node {config.instance_id} listening on http://{host}:{port}")
            server.run(sockets=[listening])
    finally:
        db.dispose()


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``; ConfigurationError naming the setting if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections accepted from a socket
    # that says so, and without it every answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except socket.gaierror as exc:  # the name, not the port: "Name or service not known"
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}: set 'host' in fhirsync.json "
            "to an address of this machine (127.0.0.1, or 0.0.0.0 for every interface)",
            field="host",
        ) from exc
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}. Another program (or "
            "another 'fhirsync serve') may be using the port: stop it, or change 'port' or "
            "'host' in fhirsync.json",
            field="port",
        ) from exc
    return sock


@handle_errors
def backup(
    node_dir: Annotated[Path, typer.Argument(help="The node directory.")],
    dest: Annotated[Path, typer.Argument(help="A new directory to hold the copy.")],
) -> None:
    """Copy the node (settings and SQLite database) to a new directory; safe while it serves.

    Exit 0 done, 1 the copy failed, 2 bad node, a PostgreSQL database, or a DEST that exists,
    cannot be made or lies inside the node directory.
    """
    from fhirsync.node import backup_node

    started = time.monotonic()
    target = node_path(dest)
    copied = backup_node(node_path(node_dir), target)
    console.print(
        f"Backed up {copied.records:,} records and {copied.events:,} events "
        f"({copied.size_bytes / 1_000_000:.1f} MB) to {target} "
        f"in {time.monotonic() - started:.1f}s",
        markup=False,
    )
    console.print(
        f"To restore: stop the node, then serve {target} (or put it in place of {node_dir}).",
        markup=False,
    )


@handle_errors
def move_parent(
    node_dir: Annotated[Path, typer.Argument(help="The node directory.")],
    new_url: Annotated[str, typer.Argument(help="The parent's new base URL.")],
    from_start: Annotated[
        bool,
        typer.Option("--from-start", help="A different parent: read its feeds from the beginning."),
    ] = False,
) -> None:
    """Point the node at its parent's new address, keeping how far it has read.

    Exit 0 done, 2 not the same parent (see --from-start) or a bad URL, 3 the new address is
    unreachable. Nothing changes unless it succeeds.
    """
    from fhirsync.node import move_parent as move

    carried = move(node_path(node_dir), new_url, from_start=from_start)
    console.print(f"Parent set to {new_url.strip().rstrip('/')}.", markup=False)
    if carried:
        console.print(
            f"{carried} feed positions carried over (checked against the new address): the "
            "next pull continues where the last one stopped."
        )
    elif from_start:
        console.print("The next pull reads the parent's feeds from the beginning.")


def register(app: typer.Typer) -> None:
    """Add this group's commands."""
    app.command()(init)
    app.command()(serve)
    app.command()(backup)
    app.command("move-parent")(move_parent)
