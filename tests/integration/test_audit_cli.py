"""``fhirsync audit NODE_DIR list|show|retry|dismiss`` on a real parent and child.

A record written invalid straight into the parent's store fails on the child; the commands list it
with the audit page's filters, show it in plain words, retry it by audit uuid (failing again, then
succeeding once the parent's copy is fixed), and dismiss another with a reason kept in the audit.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from tests.conftest import NodeFactory
from tests.integration.failure_support import parked_failure
from tests.integration.pull_support import (
    edit_sync2,
    held,
    new_uuid,
    patient,
    put,
    write_raw,
)
from typer.testing import CliRunner

from fhirsync.cli.main import build_app
from fhirsync.store import audit_query, failures
from fhirsync.testing.javafeed import JavaEvent, JavaFeedServer
from fhirsync.testing.servers import NodeHandle

_APP = build_app()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line run in this process (a subprocess per call would cost ~1 s each)."""
    result = CliRunner(env={"COLUMNS": "250"}).invoke(_APP, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def _json(*args: str) -> Any:
    done = cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _open_failures(node: NodeHandle) -> list[failures.Failure]:
    _config, db = node.open()
    try:
        with db.read() as conn:
            return failures.list_open(conn)
    finally:
        db.dispose()


def _message(node: NodeHandle, uuid: str) -> audit_query.AuditMessage:
    _config, db = node.open()
    try:
        with db.read() as conn:
            found = audit_query.get_message(conn, uuid)
    finally:
        db.dispose()
    assert found is not None
    return found


@pytest.fixture
def failed_child(node_factory: NodeFactory) -> tuple[NodeHandle, NodeHandle, list[str]]:
    """A child whose pull parked two invalid patients of its parent (audit rows kept)."""
    parent = node_factory("parent")
    good, bad1, bad2 = new_uuid(), new_uuid(), new_uuid()
    put(parent, patient(good, "Good"))
    invalid = [{**patient(u, "Bad"), "gender": "robot"} for u in (bad1, bad2)]
    write_raw(parent, "patient", invalid, "parent")
    child = node_factory(
        "child", parent=parent, start=False, extra_settings={"record_max_attempts": 1}
    )
    edit_sync2(child, persistFailureAudit=True, persistSuccessAudit=True)
    first = cli("pull", str(child.node_dir))
    assert first.returncode == 1, first.stdout + first.stderr
    return parent, child, [good, bad1, bad2]


def test_list_filters_pages_and_show(
    failed_child: tuple[NodeHandle, NodeHandle, list[str]],
) -> None:
    _parent, child, (good, bad1, bad2) = failed_child
    node = str(child.node_dir)
    failed = _json("audit", node, "list", "--status", "failure", "--json")
    assert failed["total"] == 2
    assert {m["record_uuid"] for m in failed["results"]} == {bad1, bad2}
    assert all(m["error_class"] == "InvalidResource" for m in failed["results"])
    everything = _json("audit", node, "list", "--json")
    assert good in {m["record_uuid"] for m in everything["results"]}
    assert everything["total"] == 3

    assert _json("audit", node, "list", "--operation", "PUSH", "--json")["total"] == 0
    assert _json("audit", node, "list", "--category", "location", "--json")["total"] == 0
    assert _json("audit", node, "list", "--origin", "child", "--json")["total"] == 3
    assert _json("audit", node, "list", "--origin", "elsewhere", "--json")["total"] == 0
    assert _json("audit", node, "list", "--since", "2100-01-01", "--json")["total"] == 0
    assert _json("audit", node, "list", "--until", "2100-01-01", "--json")["total"] == 3
    one = _json("audit", node, "list", "--limit", "1", "--page", "3", "--json")
    assert (one["page"], one["pages"], len(one["results"])) == (3, 3, 1)
    # Newest first across the pages, never the same row twice.
    pages = [
        _json("audit", node, "list", "--limit", "1", "--page", str(n), "--json")["results"][0]
        for n in (1, 2, 3)
    ]
    assert len({p["uuid"] for p in pages}) == 3
    assert [p["timestamp"] for p in pages] == sorted((p["timestamp"] for p in pages), reverse=True)

    table = cli("audit", node, "list", "--failed")
    assert table.returncode == 0 and bad1 in table.stdout and "2 message(s)" in table.stdout

    bad_time = cli("audit", node, "list", "--since", "yesterday")
    assert bad_time.returncode == 2 and "since" in bad_time.stderr
    bad_status = cli("audit", node, "list", "--status", "maybe")
    assert bad_status.returncode == 2 and "--status" in bad_status.stderr

    uuid = failed["results"][0]["uuid"]
    shown = cli("audit", node, "show", uuid)
    assert shown.returncode == 0, shown.stderr
    assert "what went wrong: The record was rejected because its content is not valid" in (
        shown.stdout
    )
    assert f"uuid: {uuid}" in shown.stdout and "resource_name: patient" in shown.stdout
    detail = _json("audit", node, "show", uuid, "--json")
    assert detail["plainError"].startswith("The record was rejected")
    unknown = new_uuid()
    missing = cli("audit", node, "show", unknown)
    assert missing.returncode == 2  # a usage error, as for `conflicts show`
    assert f"usage: no audit message {unknown}" in missing.stderr


@pytest.mark.postgres
def test_retry_by_uuid_fails_again_then_succeeds_after_the_fix(
    failed_child: tuple[NodeHandle, NodeHandle, list[str]],
) -> None:
    parent, child, (_good, bad1, _bad2) = failed_child
    node = str(child.node_dir)
    failed = _json("audit", node, "list", "--status", "FAILURE", "--json")["results"]
    first = next(m["uuid"] for m in failed if m["record_uuid"] == bad1)

    again = cli("audit", node, "retry", first)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "Retry failed again" in again.stdout
    second = _message(child, first).next_message_uuid
    assert second is not None and not _message(child, second).success
    # The first row was followed up: it cannot be retried twice.
    twice = cli("audit", node, "retry", first)
    assert twice.returncode == 1 and "not retried" in twice.stderr

    put(parent, patient(bad1, "Fixed"))
    fixed = cli("audit", node, "retry", second)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "Retry succeeded" in fixed.stdout
    third = _message(child, second).next_message_uuid
    assert third is not None and _message(child, third).success
    assert ("patient", bad1) in held(child)


def test_retry_all_failed_for_a_filter(
    failed_child: tuple[NodeHandle, NodeHandle, list[str]],
) -> None:
    parent, child, (_good, bad1, bad2) = failed_child
    node = str(child.node_dir)
    put(parent, patient(bad1, "Fixed"))
    put(parent, patient(bad2, "Fixed too"))
    none_match = cli("audit", node, "retry", "--category", "location")
    assert none_match.returncode == 0 and "retried 0 failed message(s)" in none_match.stdout
    done = cli("audit", node, "retry", "--category", "patient")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "retried 2 failed message(s): 2 succeeded, 0 failed again" in done.stdout
    assert {("patient", bad1), ("patient", bad2)} <= set(held(child))
    assert _open_failures(child) == []


def test_dismiss_keeps_the_reason_in_the_audit(
    failed_child: tuple[NodeHandle, NodeHandle, list[str]],
) -> None:
    _parent, child, (_good, bad1, bad2) = failed_child
    node = str(child.node_dir)
    target = next(f for f in _open_failures(child) if f.record_uuid == bad1)
    assert target.status == "parked"

    empty = cli("audit", node, "dismiss", str(target.id), "--reason", "   ")
    assert empty.returncode == 1 and "reason" in empty.stderr
    done = cli("audit", node, "dismiss", str(target.id), "--reason", "duplicate of a local record")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [f.record_uuid for f in _open_failures(child)] == [bad2]
    again = cli("audit", node, "dismiss", str(target.id), "--reason", "twice")
    assert again.returncode == 1 and "no open failure" in again.stderr

    old = _message(child, target.audit_uuid or "")
    assert old.next_message_uuid is not None
    note = _message(child, old.next_message_uuid)
    assert note.error_class == "Dismissed" and not note.success
    assert "Dismissed by cli: duplicate of a local record" in (note.details or "")
    listed = _json("audit", node, "list", "--status", "FAILURE", "--json")["results"]
    assert note.uuid in {m["uuid"] for m in listed}
    refused = cli("audit", node, "retry", note.uuid)
    assert refused.returncode == 1 and "dismissal" in refused.stderr
    # A dismissed record is left out of "retry all failed".
    rest = cli("audit", node, "retry", "--category", "patient")
    assert "retried 1 failed message(s)" in rest.stdout, rest.stdout


def test_retry_of_records_parked_while_pulling_from_a_java_parent(
    node_factory: NodeFactory,
) -> None:
    # OpenMRS feeds name records by the old STU3 FHIR address and by REST with ?v=full.
    bad, visit_type = new_uuid(), new_uuid()
    rest_path = f"/ws/rest/v1/visittype/{visit_type}"
    feed = [JavaEvent("patient", bad), JavaEvent("visittype", visit_type)]
    invalid_type = {"uuid": visit_type, "display": "Ward", "name": "Ward", "retired": "maybe"}
    with JavaFeedServer(
        feed, fhir=[{**patient(bad, "Bad"), "gender": "robot"}], rest={rest_path: invalid_type}
    ) as java:
        child = node_factory("child", start=False, extra_settings={"record_max_attempts": 1})
        edit_sync2(child, parentFeedLocation=java.base_url, persistFailureAudit=True)
        node = str(child.node_dir)
        assert cli("pull", node).returncode == 1
        failed = _json("audit", node, "list", "--status", "failure", "--json")["results"]
        used = {m["resource_name"]: m["used_resource_url"] for m in failed}
        # The address the record was read from (fhir2 R4), not the STU3 one the feed names.
        assert used == {
            "patient": f"{java.base_url}/ws/fhir2/R4/Patient/{bad}",
            "visittype": f"{java.base_url}{rest_path}?v=full",
        }

        java.fhir[("Patient", bad)] = patient(bad, "Fixed")
        java.rest[rest_path] = {**invalid_type, "retired": False}
        for message in failed:
            again = cli("audit", node, "retry", message["uuid"])
            assert again.returncode == 0, again.stdout + again.stderr
            assert "Retry succeeded" in again.stdout
    assert {("patient", bad), ("visittype", visit_type)} <= set(held(child))
    assert _open_failures(child) == []


def test_retry_without_a_target_or_filter_retries_every_parked_failure(
    node_factory: NodeFactory,
) -> None:
    # OpenMRS's default file keeps no failure audit: the parked records are the only trace.
    parent = node_factory("parent")
    bad1, bad2 = new_uuid(), new_uuid()
    invalid = [{**patient(u, "Bad"), "gender": "robot"} for u in (bad1, bad2)]
    write_raw(parent, "patient", invalid, "parent")
    child = node_factory(
        "child", parent=parent, start=False, extra_settings={"record_max_attempts": 1}
    )
    edit_sync2(child, persistFailureAudit=False)
    node = str(child.node_dir)
    assert cli("pull", node).returncode == 1
    assert {f.status for f in _open_failures(child)} == {"parked"}

    put(parent, patient(bad1, "Fixed"))
    put(parent, patient(bad2, "Fixed too"))
    done = cli("audit", node, "retry")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "retrying 2 parked failure(s)" in done.stdout
    assert {("patient", bad1), ("patient", bad2)} <= set(held(child))
    assert _open_failures(child) == []


def test_status_and_audit_show_a_failure_message_with_brackets_as_it_is(
    node_factory: NodeFactory,
) -> None:
    # The reason names the rejected value, which came from the parent: "[/]" in it stopped
    # status with a rich MarkupError, and "[code]" vanished from the line.
    parent = node_factory("parent")
    bad = new_uuid()
    write_raw(parent, "patient", [{**patient(bad, "Bad"), "gender": "[code] [/]"}], "parent")
    child = node_factory(
        "child", parent=parent, start=False, extra_settings={"record_max_attempts": 1}
    )
    edit_sync2(child, persistFailureAudit=True)
    node = str(child.node_dir)
    pulled = cli("pull", node)
    assert pulled.returncode == 1, pulled.stdout + pulled.stderr
    status = cli("status", node)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "[code] [/]" in status.stdout
    listed = cli("audit", node, "list", "--failed")
    assert listed.returncode == 0, listed.stdout + listed.stderr


def test_a_retry_that_succeeds_says_so_when_success_audit_is_not_kept(
    failed_child: tuple[NodeHandle, NodeHandle, list[str]],
) -> None:
    # persistSuccessAudit false (OpenMRS's default file) with failures kept: a retry that works
    # stores no success row to link the failed one to, and was reported as failed again.
    parent, child, (_good, bad1, bad2) = failed_child
    edit_sync2(child, persistFailureAudit=True, persistSuccessAudit=False)
    node = str(child.node_dir)
    failed = _json("audit", node, "list", "--status", "FAILURE", "--json")["results"]
    by_record = {m["record_uuid"]: m["uuid"] for m in failed}
    put(parent, patient(bad1, "Fixed"))
    one = cli("audit", node, "retry", by_record[bad1])
    assert one.returncode == 0, one.stdout + one.stderr
    assert "Retry succeeded" in one.stdout, one.stdout

    put(parent, patient(bad2, "Fixed too"))
    # Spec §7.3 links a failed message only to a stored one: both stay unlinked, both worked.
    rest = cli("audit", node, "retry", "--category", "patient")
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert "retried 2 failed message(s): 2 succeeded, 0 failed again" in rest.stdout, rest.stdout
    assert {("patient", bad1), ("patient", bad2)} <= set(held(child))
    assert _open_failures(child) == []


def test_retry_all_failed_leaves_conflicts_out(
    failed_child: tuple[NodeHandle, NodeHandle, list[str]],
) -> None:
    # A conflict is kept as a failed audit row too, but there is nothing to retry about it (a
    # person resolves it): "retry all failed" counted it and reported it as "failed again".
    parent, child, (good, bad1, bad2) = failed_child
    node = str(child.node_dir)
    put(parent, {**patient(good, "Good"), "gender": "male"})
    write_raw(child, "patient", [{**patient(good, "Good"), "gender": "other"}], "child")
    assert cli("pull", node).returncode in (0, 1)
    listed = _json("audit", node, "list", "--status", "FAILURE", "--json")["results"]
    assert good in {m["record_uuid"] for m in listed if m["merge_conflict_uuid"]}

    put(parent, patient(bad1, "Fixed"))
    put(parent, patient(bad2, "Fixed too"))
    done = cli("audit", node, "retry", "--category", "patient")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "retried 2 failed message(s): 2 succeeded, 0 failed again" in done.stdout, done.stdout


def test_retry_all_failed_retries_more_than_a_thousand(node_factory: NodeFactory) -> None:
    # The failed messages were read 1,000 at a time, once: the rest stayed failed, unsaid.
    parent = node_factory("parent")
    bad = [new_uuid() for _ in range(1003)]
    write_raw(parent, "patient", [{**patient(u, "Bad"), "gender": "robot"} for u in bad], "p")
    child = node_factory(
        "child", parent=parent, start=False, extra_settings={"record_max_attempts": 1}
    )
    edit_sync2(child, persistFailureAudit=True)
    node = str(child.node_dir)
    assert cli("pull", node).returncode == 1
    write_raw(parent, "patient", [patient(u, "Fixed") for u in bad], "p")
    done = cli("audit", node, "retry", "--category", "patient")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "retried 1003 failed message(s): 1003 succeeded, 0 failed again" in done.stdout
    assert _open_failures(child) == []


def test_retry_on_a_node_without_a_parent_changes_nothing(node_factory: NodeFactory) -> None:
    # The failure was made due before the run found no parent: refused with exit 2, yet the
    # parked record had left "Failed records" for "will be retried automatically".
    lonely = node_factory("lonely", start=False)
    failure_id, message_uuid = parked_failure(lonely, "pull")
    node = str(lonely.node_dir)
    for args in ([], [message_uuid], [str(failure_id)], ["--category", "patient"]):
        done = cli("audit", node, "retry", *args)
        assert done.returncode == 2, (args, done.stdout + done.stderr)
        assert "parentFeedLocation" in done.stderr, done.stderr
        assert [f.status for f in _open_failures(lonely)] == ["parked"], args


def test_an_id_that_names_nothing_is_a_usage_error_for_retry_and_dismiss(
    failed_child: tuple[NodeHandle, NodeHandle, list[str]],
) -> None:
    # `audit show` answered 2 (usage) for a mistyped id, `retry` and `dismiss` 1, as if a
    # retry had been made and failed: a script could not tell a typo from a failure.
    _parent, child, _uuids = failed_child
    node = str(child.node_dir)
    unknown = new_uuid()
    for args in (["retry", unknown], ["retry", "99999"], ["dismiss", "99999", "--reason", "x"]):
        done = cli("audit", node, *args)
        assert done.returncode == 2, (args, done.stdout + done.stderr)
        assert done.stderr.startswith("usage: There is no "), done.stderr
    assert {f.status for f in _open_failures(child)} == {"parked"}
