"""Bulk import of FHIR resources from NDJSON (``fhirsync import``), one resource per line.

The file is streamed: lines are read in chunks of ``chunk_lines`` raw lines, a bounded number of
chunks is in flight at once, and records are written ``batch_size`` per transaction, so memory stays
flat however big the file is.

Validation is most of the cost (fhir.resources checks every nested element in Python), so worker
processes validate chunks of raw lines in parallel and send back only a small verdict per line. The
main process parses each good line once more (orjson is far cheaper than validation), and writes it
through the store's one write path while the workers validate the next chunks. So every imported
record gets its feed event, exactly as if it had been POSTed.

A bad line (not JSON, not a valid resource, a type this node does not serve, a bad id) is not fatal:
it is reported with its line number and element, counted, and the import carries on.
"""

from __future__ import annotations

import gc
import gzip
import io
import multiprocessing
import os
import time
import uuid as uuidlib
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from typing import Any

import orjson

from fhirsync import categories as cats
from fhirsync import runtime
from fhirsync.errors import ConfigurationError, FhirsyncError, InvalidResource
from fhirsync.records import RecordWrite
from fhirsync.service.validation import normalize_resource
from fhirsync.store import records
from fhirsync.store.engine import Database

BATCH_SIZE = 1000
CHUNK_LINES = 250
MAX_ERRORS_KEPT = 100

# A verdict per line, as a worker returns it (small tuples pickle fast):
#   ("ok", category, None)            valid; the main process parses the original line
#   ("ok", category, fixed_json)      valid after wrapping lone objects in lists (store these bytes)
#   ("bad", element, message)         rejected
_Verdict = tuple[str, str | None, bytes | str | None]


@dataclass(frozen=True, slots=True)
class LineError:
    """One rejected line: its 1-based number, the offending element and why."""

    line: int
    element: str | None
    message: str


@dataclass(slots=True)
class ImportResult:
    """What an import did; ``errors`` keeps the first :data:`MAX_ERRORS_KEPT` rejected lines."""

    imported: int = 0
    """Lines that created or changed a record (each appended an event)."""
    unchanged: int = 0
    """Valid lines identical to the record already stored (no event)."""
    failed: int = 0
    lines: int = 0
    seconds: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    """Valid lines per category."""
    errors: list[LineError] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Valid records per second."""
        return (self.imported + self.unchanged) / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Progress:
    """Where an import is: bytes read of the file's total, records written, lines failed."""

    bytes_done: int
    bytes_total: int
    written: int
    failed: int


ProgressListener = Callable[[Progress], None]
ErrorListener = Callable[[LineError], None]


def import_file(
    db: Database,
    path: Path,
    origin: str,
    *,
    workers: int | None = None,
    batch_size: int = BATCH_SIZE,
    chunk_lines: int = CHUNK_LINES,
    on_progress: ProgressListener | None = None,
    on_error: ErrorListener | None = None,
) -> ImportResult:
    """Import the NDJSON file at ``path`` into ``db`` as changes made on node ``origin``.

    ``workers`` validation processes (the CPU count by default; 0 or 1 validates in this process).
    ConfigurationError if the file cannot be read.
    """
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    count = (os.cpu_count() or 1) if workers is None else workers
    result = ImportResult()
    writer = _Writer(db, origin, batch_size, result)
    started = time.perf_counter()
    # Thousands of parsed bodies and validated elements are alive at once: with the default gc
    # thresholds about a fifth of an import's CPU went to gc (``runtime``: ~15-20% more records/s).
    with handle, _lines_of(handle, path) as lines_in, runtime.bulk_settings():
        chunks = _chunks(lines_in, chunk_lines)
        pool = _pool(count) if count > 1 else None
        try:
            for first, lines, verdicts in _validated(chunks, pool, in_flight=2 * count + 2):
                for offset, (raw, verdict) in enumerate(zip(lines, verdicts, strict=True)):
                    error = writer.add(first + offset, raw, verdict)
                    if error is not None:
                        _report(result, error, on_error)
                result.lines = first + len(lines) - 1
                if on_progress is not None:
                    on_progress(Progress(handle.tell(), size, writer.written, result.failed))
            writer.flush()
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    result.seconds = time.perf_counter() - started
    if on_progress is not None:
        on_progress(Progress(size, size, writer.written, result.failed))
    return result


@contextmanager
def _lines_of(handle: io.BufferedReader, path: Path) -> Iterator[Iterable[bytes]]:
    """The NDJSON text in ``handle``: gunzipped when the file is gzip (``.ndjson.gz`` exports),
    after a UTF-8 byte order mark (Notepad writes one). ``handle.tell()`` stays the progress in
    the file's own bytes. ConfigurationError for UTF-16 text (PowerShell's ``>`` writes it)."""
    compressed = handle.peek(2)[:2] == b"\x1f\x8b"
    with gzip.GzipFile(fileobj=handle) if compressed else nullcontext(handle) as text:
        try:
            # Read inside the try: a damaged gzip header fails here, at the first peek.
            start = text.peek(3)[:3]
            if start[:2] in (b"\xff\xfe", b"\xfe\xff"):
                raise ConfigurationError(f"{path} is UTF-16 text: save it as UTF-8 to import it")
            if start == b"\xef\xbb\xbf":
                text.read(3)
            yield text
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # a truncated download, say
            raise ConfigurationError(
                f"{path}: the gzip data is damaged ({exc}): import a complete copy (the "
                "records written so far are recognised as unchanged)"
            ) from exc


def _worker_init() -> None:
    # gc.freeze: the collector never walks the objects inherited from the parent, so their pages
    # are not copied (measured: ~20% fewer page faults); then the import's thresholds.
    gc.freeze()
    gc.set_threshold(*runtime.GC_THRESHOLDS)


def _report(result: ImportResult, error: LineError, on_error: ErrorListener | None) -> None:
    result.failed += 1
    if len(result.errors) < MAX_ERRORS_KEPT:
        result.errors.append(error)
    if on_error is not None:
        on_error(error)


# --- reading and validating --------------------------------------------------------------------


def _chunks(handle: Iterable[bytes], size: int) -> Iterator[tuple[int, list[bytes]]]:
    """``(number of the first line, raw lines)`` for consecutive chunks of ``size`` lines."""
    chunk: list[bytes] = []
    first = 1
    for number, line in enumerate(handle, start=1):
        chunk.append(line)
        if len(chunk) >= size:
            yield first, chunk
            chunk, first = [], number + 1
    if chunk:
        yield first, chunk


def _pool(processes: int) -> Pool:
    # fork: workers start in milliseconds with the models already imported; spawn would re-import
    # fhir.resources (about a second each) and re-run ``python -m fhirsync``'s main module.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return context.Pool(processes, initializer=_worker_init)


def _validated(
    chunks: Iterator[tuple[int, list[bytes]]], pool: Pool | None, in_flight: int
) -> Iterator[tuple[int, list[bytes], list[_Verdict]]]:
    """Chunks with one verdict per line, in file order; at most ``in_flight`` chunks pending."""
    if pool is None:
        for first, lines in chunks:
            yield first, lines, validate_lines(lines)
        return
    pending: deque[tuple[int, list[bytes], AsyncResult[list[_Verdict]]]] = deque()
    for first, lines in chunks:
        pending.append((first, lines, pool.apply_async(validate_lines, (lines,))))
        if len(pending) >= in_flight:
            head_first, head_lines, head = pending.popleft()
            yield head_first, head_lines, head.get()
    while pending:
        head_first, head_lines, head = pending.popleft()
        yield head_first, head_lines, head.get()


def validate_lines(lines: Sequence[bytes]) -> list[_Verdict]:
    """One verdict per raw NDJSON line (runs in the worker processes)."""
    return [_verdict(line) for line in lines]


def _verdict(line: bytes) -> _Verdict:
    if not line.strip():
        return ("blank", None, None)
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return ("bad", None, f"not valid JSON: {exc}")
    if not isinstance(resource, dict):
        return ("bad", None, "a line must hold one JSON object (a FHIR resource)")
    try:
        fixed = normalize_resource(resource)
        category = cats.for_fhir_resource(fixed)
        _check_id(fixed)
    except FhirsyncError as exc:
        element = getattr(exc, "element", None) or _type_of(resource)
        return ("bad", element, exc.message)
    repaired = orjson.dumps(fixed) if fixed is not resource else None
    return ("ok", category.name, repaired)


def _type_of(resource: Mapping[str, Any]) -> str | None:
    value = resource.get("resourceType")
    return value if isinstance(value, str) else None


def _check_id(resource: Mapping[str, Any]) -> None:
    value = resource.get("id")
    if value is None:
        return
    if not isinstance(value, str) or not cats.is_valid_id(value):
        raise InvalidResource(
            f"{value!r} is not a valid id", element=f"{resource['resourceType']}.id"
        )


# --- writing -----------------------------------------------------------------------------------


class _Writer:
    """Collects good lines into write batches and commits each batch in one transaction."""

    def __init__(self, db: Database, origin: str, batch_size: int, result: ImportResult) -> None:
        self.db = db
        self.origin = origin
        self.batch_size = batch_size
        self.result = result
        self.batch: list[RecordWrite] = []
        self.written = 0

    def add(self, number: int, raw: bytes, verdict: _Verdict) -> LineError | None:
        """Queue the line's record; the LineError if the line was rejected."""
        status, category, payload = verdict
        if status == "blank":
            return None
        if status == "bad":
            return LineError(number, category, str(payload))
        assert category is not None
        body: dict[str, Any] = orjson.loads(payload if isinstance(payload, bytes) else raw)
        uuid = body.get("id") or str(uuidlib.uuid4())
        body["id"] = uuid
        self.result.counts[category] += 1
        self.batch.append(RecordWrite(category, uuid, body, self.origin))
        if len(self.batch) >= self.batch_size:
            self.flush()
        return None

    def flush(self) -> None:
        """Write the queued records (and their events) in one transaction."""
        if not self.batch:
            return
        with self.db.write() as conn:
            results = records.write_many(conn, self.batch)
        changed = sum(1 for r in results if r.event is not None)
        self.result.imported += changed
        self.result.unchanged += len(results) - changed
        self.written += len(results)
        self.batch = []
