"""``fhirsync push NODE_DIR``: one push run now, whatever ``push.enabled`` says."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fhirsync.cli.common import handle_errors, node_path
from fhirsync.cli.progress import RunView

_VIEW = RunView("push", "sent", stops_live=False)


@handle_errors
def push(node_dir: Annotated[Path, typer.Argument(help="The node directory.")]) -> None:
    """Push this node's changes to its parent once.

    Exit 0 ok, 1 failures recorded (or another push run busy), 2 configuration, 3 unreachable.
    """
    # Imported here: the node and the push engine are this command's work, not every command's
    # (see the package docstring: start-up time).
    from fhirsync.node import open_node
    from fhirsync.sync.push_run import run_push

    config, db = open_node(node_path(node_dir))
    try:
        result = _VIEW.run(lambda listener: run_push(config, db, listener=listener))
    finally:
        db.dispose()
    _VIEW.finish(result)


def register(app: typer.Typer) -> None:
    """Add ``push`` to the command line."""
    app.command("push")(push)
