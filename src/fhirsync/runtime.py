"""Interpreter settings for bulk work (pull, push and import runs), set while at least one run
is going and restored when the last one ends.

- Fewer garbage collections (:func:`bulk_settings`). With the default thresholds (700, 10, 10)
  the collector walks the objects in flight (a pull's pages: thousands of record dicts and
  models) over and over: measured, a third of a 50,000-record pull's CPU. The live set is bounded
  by the page size, so memory stays flat.
- Quicker thread hand-overs (:func:`quick_handoffs`), for push: its sender thread waits for the
  interpreter lock each time the parent answers, while the main thread prepares the next batch.
  With the default 5 ms switch interval the parent sat idle 10-18 ms between Bundles, and a
  timeline at 0.5 ms showed those gaps shorter; interleaved runs of a 10,000 push were 6% faster
  in one set of six pairs and within noise in a second set of five (bench/README.md).
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Generic, TypeVar

GC_THRESHOLDS = (50_000, 20, 100)
"""gc thresholds during bulk work (runs, their worker processes)."""

HANDOFF_INTERVAL = 0.0005
"""Thread switch interval (seconds) during a push run."""

_T = TypeVar("_T")


class _Counted(Generic[_T]):
    """A process-wide setting held by counted blocks: ``serve`` may run a pull and a push at
    once, and the value before the first block is restored when the last one ends."""

    def __init__(self, read: Callable[[], _T], write: Callable[[_T], object], value: _T) -> None:
        self.read, self.write, self.value = read, write, value
        self.lock = threading.Lock()
        self.count = 0
        self.saved: _T | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.lock:
            if self.count == 0:
                self.saved = self.read()
                self.write(self.value)
            self.count += 1
        try:
            yield
        finally:
            with self.lock:
                self.count -= 1
                if self.count == 0 and self.saved is not None:
                    self.write(self.saved)


def _set_gc(thresholds: tuple[int, ...]) -> None:
    gc.set_threshold(*thresholds)


_GC = _Counted(gc.get_threshold, _set_gc, GC_THRESHOLDS)
_SWITCH = _Counted(sys.getswitchinterval, sys.setswitchinterval, HANDOFF_INTERVAL)


def bulk_settings() -> AbstractContextManager[None]:
    """:data:`GC_THRESHOLDS` for the block (counted, see :class:`_Counted`)."""
    return _GC.held()


def quick_handoffs() -> AbstractContextManager[None]:
    """:data:`HANDOFF_INTERVAL` as the thread switch interval for the block (counted)."""
    return _SWITCH.held()
