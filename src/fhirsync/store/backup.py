"""A consistent copy of a node's SQLite database, taken while the node may be serving.

SQLite's online backup copies the database as of one read transaction: in WAL mode that blocks
no writer, and commits made meanwhile are simply not in the copy. The copy is switched out of WAL
mode, so it is one self-contained file, and is checked before anyone relies on it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fhirsync.errors import BackupFailed


@dataclass(frozen=True, slots=True)
class Copied:
    """What a copy holds."""

    records: int
    events: int
    size_bytes: int


def copy_sqlite(source: Path, dest: Path) -> Copied:
    """Copy the SQLite database ``source`` to the new file ``dest``; BackupFailed if the copy
    cannot be made or fails SQLite's integrity check (``dest`` is then removed)."""
    try:
        with _connect(source) as src, _connect(dest) as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            problems = [row[0] for row in dst.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise BackupFailed(
                    f"the copy of {source} failed its integrity check: {problems[0]}"
                )
            records = dst.execute("SELECT count(*) FROM records").fetchone()[0]
            events = dst.execute("SELECT count(*) FROM events").fetchone()[0]
    except sqlite3.Error as exc:
        dest.unlink(missing_ok=True)
        raise BackupFailed(f"cannot copy the database {source}: {exc}") from exc
    except BackupFailed:
        dest.unlink(missing_ok=True)
        raise
    return Copied(int(records), int(events), dest.stat().st_size)


class _connect:
    """A sqlite3 connection that is closed (not only committed) when the block ends."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, timeout=30.0)

    def __enter__(self) -> sqlite3.Connection:
        return self._conn

    def __exit__(self, *exc: object) -> None:
        self._conn.close()
