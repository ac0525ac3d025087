"""runtime.bulk_settings: set while any run holds them, restored when the last one ends."""

from __future__ import annotations

import gc
import sys

import pytest

from fhirsync import runtime


def test_overlapping_runs_keep_the_settings_until_the_last_one_ends() -> None:
    before = (gc.get_threshold(), sys.getswitchinterval())
    first, second = runtime.bulk_settings(), runtime.bulk_settings()
    first.__enter__()
    assert gc.get_threshold() == runtime.GC_THRESHOLDS
    assert sys.getswitchinterval() == runtime.SWITCH_INTERVAL
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second goes on
    assert gc.get_threshold() == runtime.GC_THRESHOLDS
    assert sys.getswitchinterval() == runtime.SWITCH_INTERVAL
    second.__exit__(None, None, None)
    assert (gc.get_threshold(), sys.getswitchinterval()) == before


def test_settings_are_restored_when_the_run_fails() -> None:
    before = (gc.get_threshold(), sys.getswitchinterval())
    with pytest.raises(ValueError, match="the run failed"), runtime.bulk_settings():
        raise ValueError("the run failed")
    assert (gc.get_threshold(), sys.getswitchinterval()) == before
