"""Creating and opening node directories (used by the CLI, the demo and the test harness)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from fhirsync import categories
from fhirsync.errors import BackupFailed, ConfigurationError
from fhirsync.settings import (
    DB_FILE,
    RECOVERY_FILE,
    SETTINGS_FILE,
    SYNC2_FILE,
    ClassConfig,
    GeneralConfig,
    NodeConfig,
    NodeSettings,
    Sync2Config,
    SyncMethodConfig,
    load_node,
    parent_url_problem,
    parse_node_settings,
    read_json_file,
    redacted_url,
    write_node_settings,
    write_sync2,
)
from fhirsync.store.backup import Copied, copy_sqlite
from fhirsync.store.engine import Database, open_database

DEFAULT_SCHEDULE = 300


@dataclass(frozen=True)
class InitResult:
    """What ``init`` made: the loaded node and the admin password (shown once if generated)."""

    config: NodeConfig
    admin_password: str
    password_generated: bool


def default_classes() -> list[ClassConfig]:
    """Every category in dependency order, enabled.

    Sub-resource feeds (person_name, ...) are listed too, as in Sync 2.0's default file: a Java
    parent publishes name/address/identifier changes only there (they re-sync their owner), and a
    fhirsync parent answers an empty page for them, so they cost one small request each.
    """
    return [
        ClassConfig(
            class_title=c.title, category=c.name, open_mrs_class=c.openmrs_class, enabled=True
        )
        for c in categories.all_categories()
    ]


def init_node(
    node_dir: Path,
    *,
    instance_id: str,
    port: int = 8080,
    host: str = "127.0.0.1",
    parent: str | None = None,
    parent_user: str | None = None,
    parent_password: str | None = None,
    admin_password: str | None = None,
    db_url: str | None = None,
    extra_settings: dict[str, object] | None = None,
) -> InitResult:
    """Write ``sync2.json`` and ``fhirsync.json``, create and migrate the database, add admin."""
    # Imported here: store.users loads argon2, and opening a node (every other command) adds
    # no user.
    from fhirsync.store import users

    if not instance_id.strip():
        raise ConfigurationError("--instance-id must not be blank", field="instance_id")
    if not categories.is_valid_id(instance_id):
        # The rule of a parent's child accounts (store.users): the id goes out in a header
        # with every pushed change, and the parent's account for this node must carry it.
        raise ConfigurationError(
            f"--instance-id {instance_id!r} is not usable: letters, digits, '-' and '.' only, "
            "at most 64 characters",
            field="instance_id",
        )
    if (node_dir / SYNC2_FILE).exists():
        raise ConfigurationError(f"{node_dir} already holds a node (sync2.json exists)")
    if admin_password is not None:
        users.check_password(admin_password)
    made_dir = not node_dir.exists()
    if node_dir.exists() and not node_dir.is_dir():
        raise ConfigurationError(f"{node_dir} is a file: name a directory for the node")
    try:
        node_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot make the node directory {node_dir}: {exc.strerror or exc}"
        ) from exc
    ours = [
        path
        for name in (
            SETTINGS_FILE,
            SYNC2_FILE,
            DB_FILE,
            f"{DB_FILE}-wal",
            f"{DB_FILE}-shm",
            f"{DB_FILE}-migrate.lock",
        )
        if not (path := node_dir / name).exists()
    ]
    try:
        data: dict[str, object] = {"port": port, "host": host}
        if db_url:
            data["db_url"] = _absolute_sqlite(db_url)
        if parent_user:
            data["parent_user"] = parent_user
        if parent_password:
            data["parent_password"] = parent_password
        data.update(extra_settings or {})
        settings: NodeSettings = parse_node_settings(data, SETTINGS_FILE)
        sync2 = Sync2Config(
            general=GeneralConfig(
                parent_feed_location=(parent or "").strip().rstrip("/") or None,
                # Not written: fhirsync does not use it (settings.unused_settings), and a copy
                # of the address went stale when host or port changed in fhirsync.json.
                local_feed_location=None,
                local_instance_id=instance_id,
                persist_success_audit=True,
                persist_failure_audit=True,
            ),
            push=SyncMethodConfig(
                enabled=False, schedule=DEFAULT_SCHEDULE, classes=default_classes()
            ),
            pull=SyncMethodConfig(
                enabled=False, schedule=DEFAULT_SCHEDULE, classes=default_classes()
            ),
        )
        write_node_settings(node_dir, settings)
        write_sync2(node_dir, sync2)
        config = load_node(node_dir)
        generated = admin_password is None
        password = admin_password or users.generate_password()
        db = open_database(config.db_url)
        try:
            with db.write() as conn:
                if users.list_all(conn):
                    # Another node's (a PostgreSQL server holds many databases, and one was
                    # named twice): two nodes in one set of tables mix records and positions.
                    raise ConfigurationError(
                        f"database {redacted_url(config.db_url)!r} already holds a node (it has "
                        "user accounts): give each node an empty database of its own",
                        field="db_url",
                    )
                users.add(conn, "admin", password, "admin")
        finally:
            db.dispose()
        return InitResult(config=config, admin_password=password, password_generated=generated)
    except BaseException:
        # A failed init (the database unreachable, say) leaves nothing behind, so running it
        # again once the problem is fixed is not refused as "already holds a node".
        for path in ours:
            path.unlink(missing_ok=True)
        if made_dir and not any(node_dir.iterdir()):
            node_dir.rmdir()
        raise


def _absolute_sqlite(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (from the working directory, where
    ``init`` creates the file): kept relative, every later command run from elsewhere opened
    another, empty file. Any other URL unchanged (the settings check judges it)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:" or Path(path).is_absolute():
        return url
    return parsed.set(database=str(Path(path).resolve())).render_as_string(hide_password=False)


def open_node(node_dir: Path) -> tuple[NodeConfig, Database]:
    """Load a node directory and open (migrating if needed) its database; ConfigurationError
    when its SQLite file is missing (only ``init`` creates one)."""
    config = load_node(node_dir)
    return config, _open_existing(config)


def _open_existing(config: NodeConfig) -> Database:
    _check_database_file(config)
    return open_database(config.db_url)


def _check_database_file(config: NodeConfig) -> None:
    """ConfigurationError when the node's SQLite file is missing (only ``init`` creates one)."""
    url = make_url(config.db_url)
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).exists():
        # Opening it would create an empty database: a parent then served empty feeds to
        # children that count what they sent it as delivered, and never send it again.
        raise ConfigurationError(
            f"the database {path} is missing: restore the node from its backup (see `fhirsync "
            "backup`), or check db_url; only `fhirsync init` creates a node's database",
            field="db_url",
        )


def update_sync2(node_dir: Path, changes: dict[str, object]) -> None:
    """Merge ``changes`` (OpenMRS key names, nested dicts) into ``sync2.json`` after validation."""
    path = node_dir / SYNC2_FILE
    data = read_json_file(path)
    _deep_merge(data, changes)
    from fhirsync.settings import parse_sync2

    write_sync2(node_dir, parse_sync2(data, str(path)))


def _deep_merge(into: dict[str, object], changes: dict[str, object]) -> None:
    for key, value in changes.items():
        current = into.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _deep_merge(current, value)
        else:
            into[key] = value


def backup_node(node_dir: Path, dest: Path) -> Copied:
    """Copy the node at ``node_dir`` into the new directory ``dest``: its two settings files and
    a consistent copy of its SQLite database, taken while the node may be serving. ``dest`` is a
    complete node directory (serve it, or move it in place of ``node_dir``, to restore).

    ConfigurationError when ``dest`` exists, cannot be made or lies inside ``node_dir``, or the
    database is not SQLite; BackupFailed when the copy cannot be made. Nothing is left at
    ``dest`` unless the whole copy succeeded.
    """
    config = load_node(node_dir)
    url = make_url(config.db_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise ConfigurationError(
            "this node's database is PostgreSQL: back it up with pg_dump (and copy sync2.json "
            "and fhirsync.json beside it)",
            field="db_url",
        )
    _check_database_file(config)
    if dest.exists():
        raise ConfigurationError(f"{dest} already exists: name a new directory for the backup")
    if dest.resolve().is_relative_to(node_dir.resolve()):
        # Lost with the node it should restore, and overwritten by putting it in NODE_DIR's place.
        raise ConfigurationError(
            f"{dest} is inside the node directory: put the backup outside {node_dir}"
        )
    partial = dest.with_name(f"{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted backup
    try:
        partial.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot make {dest}: {exc.strerror or exc}") from exc
    try:
        settings = read_json_file(node_dir / SETTINGS_FILE)
        # The copy uses the database beside it, wherever the original's was configured to be.
        settings.pop("db_url", None)
        _copy_parent_ca(node_dir, settings, partial)
        (partial / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        shutil.copyfile(node_dir / SYNC2_FILE, partial / SYNC2_FILE)
        for name in (SETTINGS_FILE, SYNC2_FILE):
            os.chmod(partial / name, 0o600)
        copied = copy_sqlite(Path(url.database), partial / DB_FILE)
        os.chmod(partial / DB_FILE, 0o600)
        (partial / RECOVERY_FILE).write_text(
            "This node was restored from a backup: its next pull also applies the changes that\n"
            "began on it and reached the parent after the backup, then deletes this file.\n",
            encoding="utf-8",
        )
        partial.rename(dest)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, OSError):  # a full disk, say: one line, not a traceback
            raise BackupFailed(f"cannot write the backup to {dest}: {exc.strerror or exc}") from exc
        raise
    return copied


def _copy_parent_ca(node_dir: Path, settings: dict[str, object], dest: Path) -> None:
    """Bring ``parent_ca_file`` along: a file inside the node directory is copied to the same
    place in ``dest``; one named relative to somewhere else is kept by its absolute path."""
    value = settings.get("parent_ca_file")
    if not isinstance(value, str) or not value.strip():
        return
    path = (node_dir / value.strip()).resolve()
    if not path.is_relative_to(node_dir.resolve()):
        settings["parent_ca_file"] = str(path)
    elif path.is_file():
        target = dest / path.relative_to(node_dir.resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def move_parent(node_dir: Path, new_url: str, *, from_start: bool = False) -> int:
    """Point the node at ``new_url`` as its parent; how many feed positions were carried over.

    Feed positions (pull's, and how far push has sent) are keyed by the parent's URL, so a new
    address alone would make the next pull read every feed again from page 1 and the next push
    send everything again. When the parent has only moved, its feeds at the new address hold the
    very entries this node read last: each position is checked there, then carried over. A
    parent whose feeds do not hold them is another parent: ConfigurationError, nothing changed,
    unless ``from_start`` (then its feeds are read, and this node's changes sent, from the start,
    and the versions agreed with the old parent are forgotten: nothing sends them to the new one).
    """
    from fhirsync.store import agreed, conflicts, locks, markers
    from fhirsync.sync.push_context import PUSH_FEED_PREFIX

    config = load_node(node_dir)
    new = new_url.strip().rstrip("/")
    problem = parent_url_problem(new)
    if problem:
        raise ConfigurationError(problem, field="general.parentFeedLocation")
    old = config.parent_url
    db = _open_existing(config)
    owner = locks.new_owner()
    held: list[str] = []
    try:
        for direction in ("pull", "push"):  # neither runs while its positions move
            if not locks.acquire(db, direction, owner, 120.0):
                raise ConfigurationError(
                    f"a {direction} run is in progress: try again when it has ended"
                )
            held.append(direction)
        carried = 0
        if old is not None and old != new and not from_start:
            _check_same_parent(config, db, old, new)
            with db.write() as conn:
                carried = markers.move_feed(conn, old, new)
                markers.move_feed(conn, PUSH_FEED_PREFIX + old, PUSH_FEED_PREFIX + new)
        elif old != new:
            _check_sync_parent(config, new)
            # Another parent: the versions agreed with the old one must never go up as If-Match.
            with db.write() as conn:
                agreed.forget_parent(conn)
                conflicts.forget_remote_versions(conn)
        update_sync2(node_dir, {"general": {"parentFeedLocation": new}})
    finally:
        for direction in held:
            locks.release(db, direction, owner)
        db.dispose()
    return carried


def _check_sync_parent(config: NodeConfig, new: str) -> None:
    """ConfigurationError unless ``new`` serves sync feeds (TransientError if it does not answer).

    Asked before a move to another parent changes anything: a typo there made the node forget
    what it had agreed with its parent, for a URL no pull could read.
    """
    from fhirsync.clients.http import status_of

    pulled = config.sync2.pull.enabled_categories() or ["patient"]
    feed = f"/ws/atomfeed/{pulled[0]}/recent"
    timeout = config.settings.http_connect_timeout
    status = status_of(
        new, feed, timeout=timeout, auth=config.parent_auth, ca_file=config.parent_ca_path
    )
    # 401/403: a sync parent that does not know this node's credentials yet; 500: OpenMRS's
    # answer for the recent page of an empty feed.
    if status < 300 or status in (401, 403, 500):
        return
    raise ConfigurationError(
        f"{new} is not a sync parent: its {pulled[0]} feed answered HTTP {status} (check the "
        "URL: a fhirsync parent has no path after host and port, an OpenMRS one ends in /openmrs)",
        field="general.parentFeedLocation",
    )


def _check_same_parent(config: NodeConfig, db: Database, old: str, new: str) -> None:
    """ConfigurationError unless the feeds at ``new`` hold every entry last read from ``old``."""
    from fhirsync.feed.reader import FeedReader
    from fhirsync.store import markers

    with db.read() as conn:
        positions = markers.keyed_for_feed(conn, old)
    reader = FeedReader.for_parent(config, new)
    try:
        for key, marker in positions:
            if marker.last_entry_id is None or marker.last_page is None:
                continue
            if not reader.holds(key.category, marker.last_page, marker.last_entry_id):
                raise ConfigurationError(
                    f"{new} does not look like the parent this node has read from: page "
                    f"{marker.last_page} of its {key.category} feed does not hold the entry "
                    "read last. To sync with a different parent from the beginning, use "
                    "--from-start",
                    field="general.parentFeedLocation",
                )
    finally:
        reader.close()
