"""The reads of a parent's Children page: each child's last report, failures and pushes.

    .venv/bin/python bench/children_page.py [--children 300] [--audit 500000] [--events 200000]
                                            [--db URL] [--repeat 3] [--out FILE.json]

A fresh database (SQLite in a temporary folder, or ``--db``, which must be empty) gets
``--children`` child accounts, ``--audit`` audit rows (one in ten from a child, one in twenty of
those failed; the rest the parent's own) and ``--events`` events (half received from children).
Then, best of ``--repeat``:

- ``per_child_s``: the audit reads as the page made them before migration 0008, one newest
  message and one failure count per child, without 0008's audit indexes (each a read of every
  audit row);
- ``reports_s``: ``store.children.reports_per_child``, the one statement the page makes now;
- ``pushes_s``: the page's event reads (changes and newest change per child).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from peer_harness import machine, write_figures
from sqlalchemy import Connection, func, select

from fhirsync.store import bulk, children
from fhirsync.store.engine import Database, open_database
from fhirsync.store.tables import audit, events, users

T0 = datetime(2026, 1, 1)
NEW_INDEXES = ("ix_audit_creator_time", "ix_audit_open_failures")
AUDIT_COLUMNS = (
    "uuid", "success", "timestamp", "resource_name", "record_uuid", "operation",
    "creator_instance_id", "voided", "date_created",
)  # fmt: skip
EVENT_COLUMNS = (
    "category", "seq", "event_uuid", "record_uuid", "action", "timestamp", "origin", "via",
)  # fmt: skip


def fill(db: Database, n_children: int, n_audit: int, n_events: int) -> list[str]:
    """Child accounts, audit rows and events as described above; the children's instance ids."""
    ids = [f"clinic-{n:04d}" for n in range(n_children)]
    with db.write() as conn:
        bulk.insert_rows(
            conn,
            users,
            ("name", "password_hash", "role", "instance_id", "created_at"),
            [(i, "not-a-hash", "child", i, T0) for i in ids],
        )
        for start in range(0, n_audit, 50_000):
            rows = []
            for n in range(start, min(n_audit, start + 50_000)):
                creator = ids[n % len(ids)] if n % 10 == 0 and ids else "parent"
                failed = n % 200 == 0
                moment = T0 + timedelta(seconds=n)
                rows.append(
                    (str(uuid.uuid4()), not failed, moment, "patient", str(uuid.uuid4()), "PUSH",
                     creator, False, moment)
                )  # fmt: skip
            bulk.insert_rows(conn, audit, AUDIT_COLUMNS, rows)
        rows = []
        for n in range(n_events):
            via = f"child:{ids[n % len(ids)]}" if n % 2 == 0 and ids else "parent"
            rows.append(
                ("patient", n + 1, str(uuid.uuid4()), str(uuid.uuid4()), "CREATED",
                 T0 + timedelta(seconds=n), "parent", via)
            )  # fmt: skip
        bulk.insert_rows(conn, events, EVENT_COLUMNS, rows)
    return ids


def per_child(conn: Connection, ids: list[str]) -> None:
    """The page's audit reads before migration 0008: two full reads of the audit log a child."""
    for instance_id in ids:
        conn.execute(
            select(audit.c.timestamp)
            .where(audit.c.creator_instance_id == instance_id, audit.c.voided.is_(False))
            .order_by(audit.c.timestamp.desc(), audit.c.id.desc())
            .limit(1)
        ).first()
        conn.execute(
            select(func.count()).where(
                audit.c.voided.is_(False),
                audit.c.success.is_(False),
                audit.c.creator_instance_id == instance_id,
            )
        ).scalar_one()


def best_without_0008(db: Database, repeat: int, ids: list[str]) -> float:
    """The shortest of ``repeat`` runs of :func:`per_child` with the audit indexes of migration
    0008 set aside (dropped in a transaction that is rolled back)."""
    times = []
    with db.engine.connect() as conn:
        transaction = conn.begin()
        for index in audit.indexes:
            if index.name in NEW_INDEXES:
                index.drop(conn)
        for _ in range(repeat):
            started = time.perf_counter()
            per_child(conn, ids)
            times.append(time.perf_counter() - started)
        transaction.rollback()
    return round(min(times), 4)


def best(db: Database, repeat: int, work: Callable[[Connection], Any]) -> float:
    """The shortest of ``repeat`` timed runs of ``work`` in a read transaction."""
    times = []
    for _ in range(repeat):
        with db.read() as conn:
            started = time.perf_counter()
            work(conn)
            times.append(time.perf_counter() - started)
    return round(min(times), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=300)
    parser.add_argument("--audit", type=int, default=500_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--db", default="")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(args.db or f"sqlite:///{Path(tmp) / 'parent.db'}")
        try:
            ids = fill(db, args.children, args.audit, args.events)
            figures: dict[str, Any] = {
                "backend": db.engine.dialect.name,
                "children": args.children,
                "audit_rows": args.audit,
                "events": args.events,
                "per_child_s": best_without_0008(db, args.repeat, ids),
                "reports_s": best(db, args.repeat, children.reports_per_child),
                "pushes_s": best(
                    db,
                    args.repeat,
                    lambda c: (children.changes_per_child(c), children.last_push_per_child(c)),
                ),
                **machine(),
            }
        finally:
            db.dispose()
    for name, value in figures.items():
        print(f"{name}: {value}")
    write_figures(args.out, figures)


if __name__ == "__main__":
    main()
