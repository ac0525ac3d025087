"""Committing a long pull's pages in a process of their own.

CPython runs one thread at a time. A pull's page commit (deciding each record against the local
copy and its base, writing records, events, audit rows and agreed versions) takes about as long as
fetching and validating the next page, so on a commit THREAD the two halves mostly take turns
(measured on 20,000 Patients, 2 CPUs: with commits skipped the pull ran 1.7x faster). A
:class:`CommitProcess` runs the same commit (``store.local.StoreLocalSide`` with the same hook)
in a spawned process, so the halves run at once.

Only long runs use it (``sync.committer.PageCommitter`` starts one after a few pages): spawning
costs an interpreter start (~0.5 s of CPU, paid beside the pull's own work), which a scheduled run
with a handful of changes should not pay. Pages still commit one at a time, in order, each in one
transaction. If the process dies, the page in flight is either committed whole or not at all, and
the pull stops with a TransientError, so the marker never passes an uncommitted page. If the pull
dies, the process finishes the page it holds (a whole page, marker included) and exits when it
finds its pipe closed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import pickle
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

import orjson

from fhirsync.errors import FhirsyncError, TransientError
from fhirsync.gc_tuning import GC_THRESHOLDS
from fhirsync.records import RecordWrite
from fhirsync.settings import NodeConfig
from fhirsync.store.audit import AuditEntry, AuditPolicy
from fhirsync.store.local import CommitResult, PageCommit

log = logging.getLogger(__name__)

JOIN_SECONDS = 30.0
"""How long :meth:`CommitProcess.close` waits for the process to finish before terminating it."""


@dataclass(frozen=True)
class CommitSetup:
    """What a commit process needs to build the pull's local side (picklable)."""

    db_url: str
    instance_id: str
    policy: AuditPolicy
    config: NodeConfig
    """The node's configuration, for the conflict hook (instance id and per-category policies)."""


class CommitProcess:
    """One spawned process that commits the pages it is sent, one at a time, in order."""

    def __init__(self, setup: CommitSetup) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        # spawn, not fork: the pull may run inside the threaded ``serve`` process, and a forked
        # copy of held locks (logging, the connection pool) can deadlock the child.
        self._process = context.Process(
            target=_serve, args=(child, setup), name="fhirsync-commit", daemon=True
        )
        self._process.start()
        child.close()
        self._ready = False

    def ready(self) -> bool:
        """True once the process has started and can take a page (never blocks)."""
        if not self._ready and self._conn.poll():
            self._ready = self._receive() == "ready"
        return self._ready

    def submit(self, batch: PageCommit, now: datetime) -> None:
        """Send ``batch``; the process commits it while this one goes on."""
        try:
            self._conn.send_bytes(pack(batch, now))
        except (OSError, EOFError) as exc:
            raise TransientError(f"the commit process is gone: {exc!r}") from exc

    def result(self) -> CommitResult:
        """Wait for the page sent last; its error is raised here."""
        answer = self._receive()
        if isinstance(answer, BaseException):
            raise answer
        if not isinstance(answer, CommitResult):
            raise TransientError(f"the commit process answered {type(answer).__name__}")
        return answer

    def close(self) -> None:
        """Let the process finish and exit (it holds no page when this is called)."""
        with contextlib.suppress(OSError, EOFError):  # already gone: nothing to tell it
            self._conn.send_bytes(b"")
        self._conn.close()
        self._process.join(JOIN_SECONDS)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()

    def _receive(self) -> Any:
        try:
            return self._conn.recv()
        except (OSError, EOFError) as exc:
            # Killed (out of memory, by a person) or crashed: the page it held committed whole or
            # not at all; the run stops here and the next one resumes from the marker.
            raise TransientError(
                f"the commit process stopped (exit code {self._process.exitcode})"
            ) from exc


class SharedCommitProcess:
    """A run's commit process: started when first asked for, shared by the run's categories."""

    def __init__(self, setup: CommitSetup) -> None:
        self._setup = setup
        self._process: CommitProcess | None = None

    def __call__(self) -> CommitProcess:
        """The process (started now if it is not yet)."""
        if self._process is None:
            self._process = CommitProcess(self._setup)
        return self._process

    def close(self) -> None:
        """Stop the process, if one was started."""
        if self._process is not None:
            self._process.close()
            self._process = None


def _serve(conn: Connection, setup: CommitSetup) -> None:
    """The commit process: build the local side, then commit each page it receives."""
    # Imported here: the parent process never needs the database side of this module.
    from fhirsync.store.engine import Database
    from fhirsync.store.local import StoreLocalSide
    from fhirsync.sync.reconcile import conflict_hook

    gc.set_threshold(*GC_THRESHOLDS)
    db = Database(setup.db_url, pool_size=1)
    local = StoreLocalSide(db, setup.instance_id, setup.policy, conflict_hook(setup.config))
    try:
        conn.send("ready")
        while True:
            try:
                message = conn.recv_bytes()
            except (OSError, EOFError):
                return  # the pull is gone
            if not message:
                return
            batch, now = unpack(message)
            try:
                conn.send(local.commit(batch, now=now))
            except Exception as exc:  # noqa: BLE001 - every error goes back to the pull
                log.warning("page commit failed in the commit process: %s", type(exc).__name__)
                conn.send(_sendable(exc))
    finally:
        db.dispose()


def pack(batch: PageCommit, now: datetime) -> bytes:
    """``batch`` and its commit time as bytes for the commit process.

    Pickling a page of dataclasses costs ~100 µs a record both ways (measured), as much as
    committing it; so the bodies go as one JSON array and writes and audit rows as plain tuples.
    """
    writes = [dataclasses.replace(w, body=None) for w in batch.writes]
    bodies = orjson.dumps([w.body for w in batch.writes])
    rest = dataclasses.replace(batch, writes=(), write_audit=())
    head = (
        [(w.category, w.uuid, w.origin, w.state, w.expected_version, w.via) for w in writes],
        [tuple(getattr(e, name) for name in _AUDIT_FIELDS) for e in batch.write_audit],
        rest,
        now,
    )
    pickled = pickle.dumps(head, protocol=pickle.HIGHEST_PROTOCOL)
    return len(pickled).to_bytes(8, "big") + pickled + bodies


def unpack(data: bytes) -> tuple[PageCommit, datetime]:
    """The page and commit time :func:`pack` wrote."""
    size = int.from_bytes(data[:8], "big")
    writes, audits, rest, now = pickle.loads(data[8 : 8 + size])
    bodies = orjson.loads(data[8 + size :])
    batch = dataclasses.replace(
        rest,
        writes=[
            RecordWrite(category, uuid, body, origin, state, expected, via)
            for (category, uuid, origin, state, expected, via), body in zip(
                writes, bodies, strict=True
            )
        ],
        write_audit=[AuditEntry(*values) for values in audits],
    )
    return batch, now


_AUDIT_FIELDS = tuple(f.name for f in dataclasses.fields(AuditEntry))


def _sendable(exc: Exception) -> BaseException:
    """``exc`` if it survives pickling, else a FhirsyncError naming it (type and message)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any pickling failure means: send a plain error instead
        return FhirsyncError(f"page commit failed: {type(exc).__name__}: {exc}")
    return exc
