"""Interpreter settings for bulk work (pull, push and import runs): fewer garbage collections, set
while at least one run is going and restored when the last one ends.

With the default thresholds (700, 10, 10) the collector walks the objects in flight (a pull's
pages: thousands of record dicts and models) over and over: measured, a third of a 50,000-record
pull's CPU. The live set is bounded by the page size, so memory stays flat.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

GC_THRESHOLDS = (50_000, 20, 100)
"""gc thresholds during bulk work (runs, their worker processes)."""


class _Holders:
    """How many blocks hold the bulk settings, and what to restore after the last."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.saved: tuple[int, ...] = ()


_HOLDERS = _Holders()


@contextmanager
def bulk_settings() -> Iterator[None]:
    """:data:`GC_THRESHOLDS` for the block.

    Process-wide, so counted: ``serve`` may run a pull and a push at once, and the settings
    before the first one are restored when the last one ends.
    """
    holders = _HOLDERS
    with holders.lock:
        if holders.count == 0:
            holders.saved = gc.get_threshold()
            gc.set_threshold(*GC_THRESHOLDS)
        holders.count += 1
    try:
        yield
    finally:
        with holders.lock:
            holders.count -= 1
            if holders.count == 0:
                gc.set_threshold(*holders.saved)
