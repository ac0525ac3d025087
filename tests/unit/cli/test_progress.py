"""The run view shared by `fhirsync pull` and `fhirsync push`: bar counts, result line, exit code."""

from __future__ import annotations

import pytest
import typer
from rich.progress import Progress

from fhirsync.cli.progress import RunView, _Tally
from fhirsync.sync.status import (
    CategoryStopped,
    RecordFailed,
    RunEvent,
    RunFinished,
    RunProgress,
    RunStarted,
)

PULL = RunView("pull", "applied", stops_live=True)
PUSH = RunView("push", "sent", stops_live=False)


def _fields(view: RunView, events: list[RunEvent]) -> dict[str, object]:
    with Progress(disable=True) as progress:
        task = progress.add_task(view.operation, total=None, read=0, moved=0, failed=0)
        tally = _Tally(view, progress, task)
        for event in events:
            tally.show(event)
        shown = progress.tasks[0]
        return {"description": shown.description, "total": shown.total, **shown.fields}


def test_bar_sums_per_category_counts_and_failures() -> None:
    fields = _fields(
        PUSH,
        [
            RunStarted("push", ("patient", "encounter")),
            RunProgress("push", "patient", 10, 20, applied=9),
            RunProgress("push", "patient", 20, 20, applied=18),
            RecordFailed("push", "patient", "u1", "RecordError", 1, "retrying"),
            RunProgress("push", "encounter", 5, 5, applied=5),
        ],
    )
    assert fields == {
        "description": "encounter",
        "total": 5,
        "read": 25,
        "moved": 23,
        "failed": 1,
    }


def test_run_finished_sets_the_runs_own_figures() -> None:
    fields = _fields(
        PULL,
        [
            RunProgress("pull", "patient", 10, None, applied=10),
            RunFinished("pull", "ok", 12, 11, 0, 0.5),
        ],
    )
    assert (fields["read"], fields["moved"], fields["total"]) == (12, 11, None)


def test_stopped_category_is_printed_live_by_pull_only(capsys: pytest.CaptureFixture[str]) -> None:
    stopped = CategoryStopped("pull", "patient", "RecordError", "continue_on_failure is off")
    _fields(PULL, [stopped])
    assert "category patient stopped: RecordError: continue_on_failure is off" in (
        capsys.readouterr().err
    )
    _fields(PUSH, [stopped])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("view", "result", "out", "code"),
    [
        (
            PULL,
            RunFinished("pull", "ok", 3, 2, 0, 1.25),
            "pull ok: 3 events read, 2 records applied, 0 failed in 1.2s\n",
            0,
        ),
        (
            PULL,
            RunFinished("pull", "failures", 3, 2, 1, 1.0, "patient: RequestError: bad page"),
            "pull failures: 3 events read, 2 records applied, 1 failed in 1.0s\n",
            1,
        ),
        (
            PUSH,
            RunFinished("push", "failures", 4, 3, 1, 2.0, "rejected"),
            "push failures: 4 events read, 3 records sent, 1 failed in 2.0s (rejected)\n",
            1,
        ),
        (
            PUSH,
            RunFinished("push", "busy", 0, 0, 0, 0.0, "another push run is in progress"),
            "push skipped: another push run is in progress\n",
            1,
        ),
    ],
)
def test_result_line_and_exit_code(
    view: RunView,
    result: RunFinished,
    out: str,
    code: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exited:
        view.finish(result)
    assert exited.value.exit_code == code
    assert capsys.readouterr().out == out


def test_unreachable_goes_to_stderr_with_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exited:
        PULL.finish(RunFinished("pull", "unreachable", 0, 0, 0, 0.1, "ConnectError: refused"))
    assert exited.value.exit_code == 3
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "parent unreachable: ConnectError: refused\n")


def test_refused_credentials_are_a_configuration_error_with_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused = RunFinished("pull", "configuration", 0, 0, 0, 0.1, "Unauthenticated: 401")
    with pytest.raises(typer.Exit) as exited:
        PULL.finish(refused)
    assert exited.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error: Unauthenticated: 401") and "parent_password" in err
    from fhirsync.sync.manual import describe

    said = describe(refused)
    assert not said.ok and "refused this node's credentials" in said.message


def test_conflicts_are_counted_apart_and_need_a_person(capsys: pytest.CaptureFixture[str]) -> None:
    kept = RunFinished("pull", "ok", 3, 1, 0, 0.1, None, conflicts=2)
    with pytest.raises(typer.Exit) as exited:
        PULL.finish(kept)
    assert exited.value.exit_code == 1
    out = capsys.readouterr().out
    assert "1 records applied, 0 failed, 2 conflict(s) kept for a person" in out
    from fhirsync.sync.manual import describe

    said = describe(kept)  # "Pull now" on the admin page
    assert not said.ok
    assert said.message == (
        "Pulled 1 record(s); 2 kept as conflict(s) for a person to resolve (see Conflicts)."
    )
