"""runtime.bulk_settings (the gc thresholds): set while any run holds it, restored when the last one ends."""

from __future__ import annotations

import gc
import sys

import pytest

from fhirsync import runtime


def test_overlapping_runs_keep_the_thresholds_until_the_last_one_ends() -> None:
    before = gc.get_threshold()
    first, second = runtime.bulk_settings(), runtime.bulk_settings()
    first.__enter__()
    assert gc.get_threshold() == runtime.GC_THRESHOLDS
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second goes on
    assert gc.get_threshold() == runtime.GC_THRESHOLDS
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before


def test_thresholds_are_restored_when_the_run_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError, match="the run failed"), runtime.bulk_settings():
        raise ValueError("the run failed")
    assert gc.get_threshold() == before


def test_push_hand_overs_are_set_for_the_block_and_restored_after_the_last() -> None:
    before = sys.getswitchinterval()
    first, second = runtime.quick_handoffs(), runtime.quick_handoffs()
    first.__enter__()
    assert sys.getswitchinterval() == pytest.approx(runtime.HANDOFF_INTERVAL)
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(runtime.HANDOFF_INTERVAL)
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before
    with pytest.raises(ValueError, match="the run failed"), runtime.quick_handoffs():
        raise ValueError("the run failed")
    assert sys.getswitchinterval() == before
