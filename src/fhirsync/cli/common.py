"""Shared pieces of the command line: exit codes, error reporting, node loading."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fhirsync.errors import ConfigurationError, FhirsyncError, TransientError

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
"""Ctrl-C: the shells' code for a command stopped by SIGINT (128 + 2), outside the contract's."""

# soft_wrap: messages are not re-wrapped at 80 columns when output goes to a pipe or a log.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
P = ParamSpec("P")
R = TypeVar("R")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn fhirsync errors into a one-line message and the contract's exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt as exc:
            # Pull, push and import commit page by page (with the marker): nothing half-done.
            err_console.print(
                "interrupted: what was committed is kept; run the command again to continue"
            )
            raise typer.Exit(EXIT_INTERRUPTED) from exc
        except ConfigurationError as exc:
            err_console.print(f"[red]configuration error:[/red] {plain(exc)}")
            raise typer.Exit(EXIT_USAGE) from exc
        except TransientError as exc:
            err_console.print(f"[red]parent unreachable:[/red] {plain(exc)}")
            raise typer.Exit(EXIT_UNREACHABLE) from exc
        except FhirsyncError as exc:
            err_console.print(f"[red]error:[/red] {plain(exc)}")
            raise typer.Exit(EXIT_FAILURES) from exc
        except Exception as exc:
            reason = _database_error(exc)
            if reason is None:
                raise
            # A full disk or a database locked for longer than its timeout: one line, not a
            # traceback (the engine hides statement parameters, so no record data is shown).
            err_console.print(f"[red]database error:[/red] {plain(reason)}")
            raise typer.Exit(EXIT_FAILURES) from exc

    return wrapper


def plain(value: object) -> str:
    """``value`` as text inside rich markup (console output and table cells): its brackets are
    shown, not read as styles. A user name, a path, a parent's message or a record's value
    holding "[/]" would otherwise stop the command with a MarkupError, and "[code]" vanish."""
    return escape(str(value))


def _database_error(exc: Exception) -> str | None:
    """The reason of a SQLAlchemy error, None for anything else. sqlalchemy is looked up, not
    imported: a command that has not loaded it cannot have raised its errors."""
    module = sys.modules.get("sqlalchemy.exc")
    if module is None or not isinstance(exc, module.SQLAlchemyError):
        return None
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


NodeDirArg = typer.Argument(..., help="The node directory (holds sync2.json and fhirsync.json).")


def setup_logging(level: str) -> None:
    """One structured line per event on stderr."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every request at INFO: some 30 lines a scheduled pull with nothing to pull
    # (~100,000 an hour at a 1-second schedule), burying the one line a run writes. Its
    # warnings still show, and its requests at DEBUG.
    logging.getLogger("httpx").setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)


def node_path(value: Path) -> Path:
    """The node directory as an absolute path."""
    return value.expanduser().resolve()
