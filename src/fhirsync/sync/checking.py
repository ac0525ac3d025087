"""Validating pulled record bodies, in this process or in a pool of worker processes.

Every body a pull fetches is validated before it is written (``apply.checked_body``: the
fhir.resources R4B models plus required bindings for FHIR categories, the REST representation rules
otherwise). Nothing here weakens that; it only decides WHERE the FHIR validation runs.

Where: in this process by default (``pull_validation_workers`` = 1). With the fast path of
``service.fastcheck`` a generated Patient costs about 25 µs to validate, against about 250 µs for
the rest of its pull, so worker processes gained only ~5% on 20,000 Patients (measured, 2 CPUs),
and they cost a fork from the threaded ``serve`` process and stray processes when a pull is
killed. A node with spare cores and bodies the fast path cannot take (contained resources,
``_field`` extensions: ~200 µs each) can still set ``pull_validation_workers`` to 0 (one per CPU)
or N: the workers are forked once per run, at its first FHIR body; each fetched batch's FHIR
bodies go to them as JSON in as many slices as there are workers, and only the verdicts come back
(``None`` for "valid, stored as is", the repaired JSON when lenient parsing wrapped a lone object
in a list, or the error). A worker whose pull process died exits by itself. REST bodies are cheap
to check and stay in this process.

Pages overlap in ``sync.pull`` instead: a page is committed on a background thread while the next
one is fetched and validated. Validation is never skipped: there is no setting that turns it off.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

import orjson

from fhirsync import categories as cats
from fhirsync.categories import Category
from fhirsync.errors import InvalidResource, TransientError
from fhirsync.records import RecordState
from fhirsync.runtime import GC_THRESHOLDS
from fhirsync.sync import apply

SLICE_TIMEOUT = 300.0
"""Seconds to wait for one slice's verdicts (a slice of 500 bodies takes well under a second)."""

Checked = tuple[Mapping[str, Any], RecordState] | InvalidResource
"""The body to store and its state, or why the body was refused."""
Item = tuple[Category, str, Mapping[str, Any]]
"""(category, record uuid, fetched body)."""
_Verdict = tuple[bytes | None, str | None, str | None]
"""(repaired JSON or None, error message or None, error element or None)."""


Pending = Callable[[], list[Checked]]
"""Waits for a started check and returns its results."""


class BodyChecker(Protocol):
    """Validates fetched bodies (``apply.checked_body`` semantics)."""

    def start(self, items: Sequence[Item]) -> Pending:
        """Begin checking ``items``; the returned call gives one result per item, in order."""
        ...

    def close(self) -> None:
        """Release workers, if any."""
        ...


def check_one(category: Category, uuid: str, body: Mapping[str, Any]) -> Checked:
    """``apply.checked_body`` with its InvalidResource returned instead of raised."""
    try:
        return apply.checked_body(category, uuid, body)
    except InvalidResource as exc:
        return exc


class InlineChecker:
    """Validates in this process."""

    def start(self, items: Sequence[Item]) -> Pending:
        """Check ``items`` now; the returned call gives the results."""
        results = [check_one(c, u, b) for c, u, b in items]
        return lambda: results

    def close(self) -> None:
        """Nothing to release."""


class PoolChecker:
    """Validates FHIR bodies in ``workers`` forked processes; REST bodies in this process."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def _workers(self) -> ProcessPoolExecutor:
        # Made on the first FHIR body, so a run with nothing new (most scheduled runs) forks
        # nothing. fork: workers start in milliseconds with fhir.resources already imported
        # (spawn would import it again in each, about a second). ProcessPoolExecutor, not
        # multiprocessing.Pool: a worker that dies breaks the executor at once (BrokenProcessPool)
        # where a Pool loses the task and waits forever, and may then hang in terminate().
        if self._closed:
            raise RuntimeError("the validation pool is closed")
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_worker_init
            )
        return self._pool

    def start(self, items: Sequence[Item]) -> Pending:
        """Send the FHIR items to the workers; the returned call waits for their verdicts."""
        out: list[Checked | None] = [None] * len(items)
        fhir: list[int] = []
        for index, (category, uuid, body) in enumerate(items):
            if category.is_fhir:
                fhir.append(index)
            else:
                out[index] = check_one(category, uuid, body)
        slices: list[list[int]] = []
        pending: list[Future[list[_Verdict]]] = []
        if fhir:
            pool = self._workers()
            step = -(-len(fhir) // self.workers)
            slices = [fhir[i : i + step] for i in range(0, len(fhir), step)]
            pending = [
                pool.submit(_check_slice, [_payload(items[i]) for i in part]) for part in slices
            ]

        def wait() -> list[Checked]:
            for part, result in zip(slices, pending, strict=True):
                try:
                    verdicts = result.result(timeout=SLICE_TIMEOUT)
                except (BrokenProcessPool, TimeoutError) as exc:
                    # A worker died (killed, out of memory) or hangs: stop the run before this
                    # page commits (markers stay); the next run starts a fresh pool.
                    raise TransientError(f"validation worker failed: {exc!r}") from exc
                for index, verdict in zip(part, verdicts, strict=True):
                    out[index] = _checked(items[index], verdict)
            return [c for c in out if c is not None]

        return wait

    def close(self) -> None:
        """Stop the workers."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def make_checker(workers: int) -> BodyChecker:
    """A pool of ``workers`` processes (0 = one per CPU); inline when that is 1 or less."""
    count = (os.cpu_count() or 1) if workers == 0 else workers
    return PoolChecker(count) if count > 1 else InlineChecker()


def _payload(item: Item) -> tuple[str, str, bytes]:
    category, uuid, body = item
    return category.name, uuid, orjson.dumps(body)


def _checked(item: Item, verdict: _Verdict) -> Checked:
    category, uuid, body = item
    repaired, message, element = verdict
    if message is not None:
        return InvalidResource(message, category=category.name, uuid=uuid, element=element)
    stored: Mapping[str, Any] = orjson.loads(repaired) if repaired is not None else body
    return stored, "active"


ORPHAN_CHECK_SECONDS = 1.0
"""How often a worker checks that the pull process that forked it is still alive."""


def _worker_init() -> None:
    # Inherited objects are never collected in the worker (fewer copy-on-write page copies), and
    # collections are fewer and larger, as in the pull process (``runtime``).
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    threading.Thread(
        target=_exit_when_orphaned, args=(os.getppid(),), name="orphan-check", daemon=True
    ).start()


def _exit_when_orphaned(parent: int) -> None:
    # A pull killed with SIGKILL cannot stop its workers, and they never see the end of their task
    # queue (each holds a copy of its write end), so without this they would sleep forever.
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(0)


def _check_slice(payloads: list[tuple[str, str, bytes]]) -> list[_Verdict]:
    """Runs in a worker: the verdict of each (category, uuid, JSON body)."""
    out: list[_Verdict] = []
    for name, uuid, raw in payloads:
        body = orjson.loads(raw)
        result = check_one(cats.get(name), uuid, body)
        if isinstance(result, InvalidResource):
            out.append((None, result.message, result.element))
        else:
            fixed = result[0]
            out.append((None if fixed is body else orjson.dumps(fixed), None, None))
    return out
