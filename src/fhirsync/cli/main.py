"""The ``fhirsync`` entry point: assembles the command groups."""

from __future__ import annotations

import typer

from fhirsync.cli import audit, conflicts, data, demo, node, push, sync, users


def build_app() -> typer.Typer:
    """The Typer application with every command group registered."""
    app = typer.Typer(
        name="fhirsync",
        help="OpenMRS Sync 2.0 in Python: FHIR R4, REST and Atom feeds between clinic servers.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for group in (node, users, sync, audit, conflicts, push, data, demo):
        group.register(app)
    return app


def main() -> None:
    """Run the command line."""
    build_app()()
