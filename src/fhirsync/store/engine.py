"""Database engines: SQLite in WAL mode (the default) or PostgreSQL, plus migrations."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from fhirsync.errors import ConfigurationError
from fhirsync.settings import redacted_url

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)
_MIGRATIONS = Path(__file__).parent / "migrations"
WAL_AUTOCHECKPOINT_PAGES = 10_000
"""A commit that leaves this many pages in the WAL (~40 MB) copies them into the database.

SQLite's default (1,000 pages, ~4 MB) made every third pushed Bundle of 500 Patients, or a pulled
page, wait 10-14 ms for a checkpoint, and copied the same index pages again and again: pushing
40,000 Patients took 3.9-4.0 s with it and 3.2-3.5 s with this (less CPU on both sides), a
50,000 pull 9.0-9.7 s against 8.3-8.7 s. A server also checkpoints when it is idle
(``store.checkpoints``), so bursts of sync rarely meet one."""
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
"""The WAL file is cut back to this size when it is reset (it otherwise keeps its largest size)."""


def _sqlite_setup(engine: Engine) -> None:
    """WAL, a long busy timeout, and BEGIN IMMEDIATE for write transactions.

    pysqlite's own transaction handling starts transactions lazily and DEFERRED, which turns two
    concurrent writers into a "database is locked" error instead of a wait. So we issue BEGIN.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("fhirsync_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One node's database: an engine plus read and write transaction scopes."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
            if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
                raise ConfigurationError(
                    "an in-memory SQLite database cannot be shared", field="db_url"
                )
        else:
            kwargs["pool_size"] = pool_size
            kwargs["pool_pre_ping"] = True
        # hide_parameters: a database error's text (logged, or shown as an error message) never
        # carries the statement's parameters, which are record bodies and names (patient data).
        self.engine = create_engine(url, hide_parameters=True, **kwargs)
        if self.is_sqlite:
            _sqlite_setup(self.engine)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only scope (a consistent snapshot for its duration)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed on normal exit, rolled back on any exception."""
        with self.engine.connect() as conn:
            conn.execution_options(fhirsync_write=True)
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def alembic_config(url: str) -> Config:
    """An Alembic configuration pointing at our migrations and ``url``."""
    # Imported here: Alembic costs ~0.25 s to import, and only migrations need it.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (idempotent).

    ConfigurationError when the database cannot be reached, or when a newer fhirsync has
    migrated it past what this version knows (after a rolled-back upgrade): migrating it "down"
    could lose what the newer version stored, so nothing is changed.
    """
    from alembic import command
    from alembic.util.exc import CommandError

    try:
        command.upgrade(alembic_config(url), "head")
    except OperationalError as exc:
        raise ConfigurationError(
            f"cannot open database {redacted_url(url)!r}: {exc.orig}", field="db_url"
        ) from exc
    except DatabaseError as exc:
        raise ConfigurationError(_refused(url, exc), field="db_url") from exc
    except CommandError as exc:
        raise ConfigurationError(
            f"database {redacted_url(url)!r} has a schema this fhirsync does not know ({exc}; "
            f"the newest it knows is {HEAD_REVISION}). A newer fhirsync has used it: run that "
            "version again, or restore a backup taken before the upgrade",
            field="db_url",
        ) from exc


_INSUFFICIENT_PRIVILEGE = "42501"


def _refused(url: str, exc: DatabaseError) -> str:
    """The one-line error of a database that refused the migrations."""
    # PostgreSQL's text goes on with the statement and a caret under it ("LINE 2: CREATE ...").
    reason = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
    shown = redacted_url(url)
    if getattr(exc.orig, "sqlstate", None) == _INSUFFICIENT_PRIVILEGE:
        role = make_url(url).username
        return (
            f"database {shown!r} refused the role {role!r}: {reason}. fhirsync creates, reads "
            "and changes its tables there: connect as the role that owns the database and its "
            "tables, or grant this role those rights"
        )
    if url.startswith("sqlite"):  # e.g. "file is not a database": a damaged or foreign file
        return (
            f"cannot read database {shown!r}: {reason}. If it is damaged, restore the node "
            "from a copy made by 'fhirsync backup'"
        )
    return f"cannot read database {shown!r}: {reason}"


HEAD_REVISION = "0008"
"""The newest migration (a unit test checks it against the migration scripts)."""


def open_database(url: str, *, migrate_first: bool = True) -> Database:
    """Open (and by default migrate) the database at ``url``.

    A database already at :data:`HEAD_REVISION` is not handed to Alembic: importing it costs
    every command about a quarter of a second.
    """
    db = Database(url)
    try:
        if migrate_first and not _at_head(db):
            # Two processes opening an outdated database at once (serve restarting after an
            # upgrade while a cron pull starts) would both migrate, and one would fail on a table
            # or index the other had just made. The second waits, then finds it done.
            with _migration_lock(db):
                if not _at_head(db):
                    migrate(url)
    except BaseException:
        db.dispose()
        raise
    return db


_MIGRATION_LOCK_KEY = 0x66687379  # "fhsy": one PostgreSQL advisory lock id for migrations


@contextmanager
def _migration_lock(db: Database) -> Iterator[None]:
    """Held by one process at a time: a lock file beside a SQLite database, a PostgreSQL
    advisory lock otherwise."""
    if db.is_sqlite:
        path = db.engine.url.database
        assert path is not None  # in-memory databases are refused by Database
        try:
            handle = open(f"{path}-migrate.lock", "a+b")  # noqa: SIM115 - closed just below
        except OSError as exc:  # a folder that does not exist or cannot be written: a traceback
            raise ConfigurationError(
                f"cannot open database {redacted_url(db.url)!r}: {exc.strerror} "
                f"({Path(path).parent})",
                field="db_url",
            ) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    try:
        conn = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except OperationalError as exc:
        raise ConfigurationError(
            f"cannot open database {redacted_url(db.url)!r}: {exc.orig}", field="db_url"
        ) from exc
    with conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK_KEY})")
        try:
            yield
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK_KEY})")


def _at_head(db: Database) -> bool:
    try:
        with db.read() as conn:
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except DBAPIError:  # a new database (no such table) or one that cannot be opened: migrate
        return False
    return version == HEAD_REVISION


def null_pool_engine(url: str) -> Engine:
    """An engine without pooling, for one-off administrative work (migrations, tests)."""
    return create_engine(url, poolclass=NullPool)
