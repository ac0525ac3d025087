"""Pulled bodies are validated the same way in worker processes as in the pull process."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from fhirsync import categories as cats
from fhirsync.errors import InvalidResource, TransientError
from fhirsync.sync import checking
from fhirsync.sync.checking import InlineChecker, Item, PoolChecker, make_checker

PATIENT = cats.get("patient")
VISIT_TYPE = cats.get("visittype")


def _patient(uuid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": uuid, "gender": "female", **extra}


def _items() -> list[Item]:
    ok = "11111111-1111-4111-8111-111111111111"
    lone = "22222222-2222-4222-8222-222222222222"
    bad = "33333333-3333-4333-8333-333333333333"
    wrong_id = "44444444-4444-4444-8444-444444444444"
    return [
        (PATIENT, ok, _patient(ok)),
        # A lone object where FHIR wants a list (HAPI-lenient): stored wrapped in a list.
        (PATIENT, lone, _patient(lone, name={"family": "Osei"})),
        (PATIENT, bad, _patient(bad, gender="robot")),
        (PATIENT, wrong_id, _patient("55555555-5555-4555-8555-555555555555")),
        (VISIT_TYPE, "vt-1", {"uuid": "vt-1", "name": "Outpatient", "retired": True}),
    ]


@pytest.fixture
def pool() -> Iterator[PoolChecker]:
    checker = PoolChecker(2)
    yield checker
    checker.close()


def _shape(result: object) -> object:
    if isinstance(result, InvalidResource):
        return ("invalid", result.element, result.message)
    return result


def test_the_pool_gives_the_inline_verdicts(pool: PoolChecker) -> None:
    inline = InlineChecker().start(_items())()
    pooled = pool.start(_items())()
    assert [_shape(r) for r in pooled] == [_shape(r) for r in inline]
    ok, lone, bad, wrong_id, rest = pooled
    assert ok == (_items()[0][2], "active")
    assert not isinstance(lone, InvalidResource) and lone[0]["name"] == [{"family": "Osei"}]
    assert isinstance(bad, InvalidResource) and bad.element is not None and "gender" in bad.element
    assert isinstance(wrong_id, InvalidResource) and wrong_id.element == "id"
    assert not isinstance(rest, InvalidResource) and rest[1] == "retired"


def test_an_empty_batch_and_a_closed_pool(pool: PoolChecker) -> None:
    assert pool.start([])() == []
    assert pool.start(_items()[4:])()[0][1] == "retired"
    assert pool._pool is None  # nothing to validate in the workers: nothing forked
    pool.close()
    with pytest.raises(RuntimeError):
        pool.start(_items()[:1])
    # REST bodies never need the pool.
    assert len(pool.start(_items()[4:])()) == 1


def test_make_checker_sizes() -> None:
    assert isinstance(make_checker(1), InlineChecker)
    checker = make_checker(2)
    try:
        assert isinstance(checker, PoolChecker) and checker.workers == 2
    finally:
        checker.close()


def test_a_dead_worker_stops_the_run_instead_of_hanging(
    pool: PoolChecker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checking, "SLICE_TIMEOUT", 1.0)
    many: list[Item] = [
        (
            PATIENT,
            f"{n:08d}-0000-4000-8000-000000000000",
            _patient(f"{n:08d}-0000-4000-8000-000000000000"),
        )
        for n in range(3000)
    ]
    wait = pool.start(many)
    assert pool._pool is not None
    for pid in pool._pool._processes:  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(TransientError):
        wait()


_KILLED_PULL = """
import sys, time
from fhirsync import categories as cats
from fhirsync.sync.checking import PoolChecker
pool = PoolChecker(2)
uuid = "11111111-1111-4111-8111-111111111111"
body = {"resourceType": "Patient", "id": uuid}
pool.start([(cats.get("patient"), uuid, body)] * 4)()
print(" ".join(str(pid) for pid in pool._workers()._processes), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its (new) parent to reap it.
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_exit_when_their_pull_is_killed() -> None:
    """A pull killed with SIGKILL leaves no validation workers behind (they would sleep forever
    on their task queue otherwise)."""
    import subprocess
    import sys
    import time

    pull = subprocess.Popen([sys.executable, "-c", _KILLED_PULL], stdout=subprocess.PIPE, text=True)
    assert pull.stdout is not None
    workers = [int(pid) for pid in pull.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    pull.kill()
    pull.wait()
    pull.stdout.close()
    deadline = time.monotonic() + 10 * checking.ORPHAN_CHECK_SECONDS
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
