"""The record write path: every change appends its event in the same transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from fhirsync.errors import VersionMismatch
from fhirsync.records import RecordWrite
from fhirsync.store import events, records
from fhirsync.store.engine import open_database
from fhirsync.store.tables import events as events_table
from fhirsync.store.tables import records as records_table
from fhirsync.testing.postgres import waiting_for_a_lock

pytestmark = pytest.mark.postgres


def _patient(gender: str) -> dict[str, object]:
    return {"resourceType": "Patient", "gender": gender}


def test_actions_follow_state_changes(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        created = records.write(conn, RecordWrite("patient", "p1", _patient("male"), "n1"))
        updated = records.write(conn, RecordWrite("patient", "p1", _patient("female"), "n1"))
        same = records.write(conn, RecordWrite("patient", "p1", _patient("female"), "n1"))
        voided = records.write(conn, RecordWrite("patient", "p1", None, "n1", state="voided"))
        unvoided = records.write(conn, RecordWrite("patient", "p1", None, "n1"))
        deleted = records.write(conn, RecordWrite("patient", "p1", None, "n1", state="deleted"))
    got = [
        r.event.action if r.event else None
        for r in (created, updated, same, voided, unvoided, deleted)
    ]
    assert got == ["CREATED", "UPDATED", None, "VOIDED", "UNVOIDED", "DELETED"]
    assert [r.event.seq for r in (created, updated) if r.event] == [1, 2]
    assert deleted.record.version == 5
    db.dispose()


def test_a_record_made_or_changed_while_voided_is_announced_voided(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        made = records.write(conn, RecordWrite("patient", "p1", _patient("male"), "n1", "voided"))
        again = records.write(conn, RecordWrite("patient", "p1", _patient("female"), "n1"))
    assert made.event is not None and made.event.action == "VOIDED"
    assert (made.created, again.created) == (True, False)
    assert again.event is not None and again.event.action == "UNVOIDED"
    with db.write() as conn:
        records.write(conn, RecordWrite("patient", "p1", None, "n1", state="voided"))
        edited = records.write(
            conn, RecordWrite("patient", "p1", _patient("other"), "n1", "voided")
        )
    # Changed while voided: still announced as a void, whose body the nodes below fetch.
    assert edited.event is not None and edited.event.action == "VOIDED"
    db.dispose()


def test_failure_inside_transaction_leaves_neither_record_nor_event(db_url: str) -> None:
    db = open_database(db_url)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.write() as conn:
        records.write(conn, RecordWrite("patient", "p1", _patient("male"), "n1"))
        raise Boom
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(records_table)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(events_table)).scalar() == 0
        assert events.latest_seq(conn, "patient") == 0
    db.dispose()


def test_stale_expected_version_rolls_back_the_whole_batch(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        records.write(conn, RecordWrite("patient", "p1", _patient("male"), "n1"))
    with pytest.raises(VersionMismatch), db.write() as conn:
        records.write_many(
            conn,
            [
                RecordWrite("patient", "p2", _patient("male"), "n1"),
                RecordWrite("patient", "p1", _patient("female"), "n1", expected_version=7),
            ],
        )
    with db.read() as conn:
        assert records.get(conn, "patient", "p2") is None
        p1 = records.get(conn, "patient", "p1")
        assert p1 is not None and p1.version == 1
        assert events.latest_seq(conn, "patient") == 1
    db.dispose()


def test_fhir_body_gets_id_and_meta(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as conn:
        rec = records.write(conn, RecordWrite("patient", "p1", _patient("male"), "n1")).record
    body = rec.resource()
    assert body["id"] == "p1"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    db.dispose()


def test_concurrent_first_events_of_a_category_all_commit_with_distinct_seqs(db_url: str) -> None:
    # The first event of a category creates its counter row. Writers that start together must
    # not both try to create it: on PostgreSQL the loser's transaction failed on the unique key.
    import threading
    from datetime import UTC, datetime

    db = open_database(db_url)
    writers = 6
    errors: list[BaseException] = []

    def write_one(category: str, barrier: threading.Barrier, n: int) -> None:
        barrier.wait(timeout=30)
        try:
            with db.write() as conn:
                new = events.NewEvent(category, f"r{n}", "CREATED", datetime.now(UTC), "n1", None)
                events.append(conn, [new])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    for round_ in range(5):
        category = f"newcat{round_}"
        barrier = threading.Barrier(writers)
        threads = [
            threading.Thread(target=write_one, args=(category, barrier, n)) for n in range(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with db.read() as conn:
            seqs = sorted(e.seq for e in events.between(conn, category, 1, 100))
            assert seqs == list(range(1, writers + 1))
            assert events.latest_seq(conn, category) == writers
    db.dispose()


def _location(name: str) -> dict[str, object]:
    return {"resourceType": "Location", "name": name}


@pytest.mark.parametrize("records_exist", [False, True], ids=["new records", "updates"])
def test_writers_of_two_categories_in_either_order_do_not_deadlock(
    db_url: str, records_exist: bool
) -> None:
    # Two transaction Bundles, one listing a Patient before a Location and one the other way
    # round, took the per-category feed counters (and the record rows) in entry order: on
    # PostgreSQL each held one and waited for the other, and one Bundle failed with "deadlock
    # detected" (a 500). SQLite's exclusive write transactions never met this.
    import threading
    import time

    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers (FHIRSYNC_TEST_DB=postgresql checks this)")
    db = open_database(db_url)
    if records_exist:
        with db.write() as conn:
            records.write_many(
                conn,
                [
                    RecordWrite("patient", "p1", _patient("male"), "n1"),
                    RecordWrite("location", "l1", _location("Ward 1"), "n1"),
                ],
            )
    # New records of their own (the writers then meet on the feed counters), or the same two.
    patient_uuid = "p1" if records_exist else "p2"
    location_uuid = "l1" if records_exist else "l2"
    other_patient = "p1" if records_exist else "p3"
    other_location = "l1" if records_exist else "l3"
    errors: list[BaseException] = []

    def patient_first() -> None:
        try:
            with db.write() as conn:
                records.write_many(
                    conn,
                    [
                        RecordWrite("patient", patient_uuid, _patient("female"), "n1"),
                        RecordWrite("location", location_uuid, _location("Ward 2"), "n1"),
                    ],
                )
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    other = threading.Thread(target=patient_first)
    try:
        # A writer that takes the locks in the one order every writer uses (location, then
        # patient) holds the location's rows while the other transaction starts.
        with db.write() as conn:
            records.write_many(
                conn, [RecordWrite("location", other_location, _location("Ward 3"), "n1")]
            )
            other.start()
            deadline = time.monotonic() + 10
            while not waiting_for_a_lock(db) and time.monotonic() < deadline:
                time.sleep(0.02)
            records.write_many(
                conn, [RecordWrite("patient", other_patient, _patient("other"), "n1")]
            )
    finally:
        other.join(30)
        db.dispose()
    assert errors == []
    db = open_database(db_url)
    with db.read() as conn:
        patient = records.get(conn, "patient", patient_uuid)
        location = records.get(conn, "location", location_uuid)
        assert patient is not None and b"female" in patient.body  # the later writer's
        assert location is not None and b"Ward 2" in location.body
    db.dispose()


def test_writers_inserting_the_same_new_records_in_opposite_orders_do_not_deadlock(
    db_url: str,
) -> None:
    # Two Bundles creating the same two new Patients, listed in opposite orders, inserted their
    # rows in entry order: on PostgreSQL each held one new row's unique key and waited for the
    # other's, and one failed with "deadlock detected" (a 500). In one order, the later writer
    # only waits, then finds the records and updates them (``in_write``'s second run).
    import threading
    import time

    from fhirsync.service.fhir import in_write

    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers (FHIRSYNC_TEST_DB=postgresql checks this)")
    db = open_database(db_url)
    errors: list[BaseException] = []
    written: list[str] = []

    def b_then_a() -> None:
        writes = [
            RecordWrite("patient", "p-b", _patient("female"), "n2"),
            RecordWrite("patient", "p-a", _patient("female"), "n2"),
        ]
        try:
            results = in_write(db, lambda conn: records.write_many(conn, writes))
            written.extend(r.record.uuid for r in results)
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    other = threading.Thread(target=b_then_a)
    try:
        with db.write() as conn:  # a writer creating p-a, then p-b
            records.write_many(conn, [RecordWrite("patient", "p-a", _patient("male"), "n1")])
            other.start()
            deadline = time.monotonic() + 10
            while not waiting_for_a_lock(db) and time.monotonic() < deadline:
                time.sleep(0.02)
            records.write_many(conn, [RecordWrite("patient", "p-b", _patient("male"), "n1")])
    finally:
        other.join(30)
    try:
        assert errors == []
        assert written == ["p-b", "p-a"]  # results (and events) in write order
        with db.read() as conn:
            for uuid in ("p-a", "p-b"):
                patient = records.get(conn, "patient", uuid)
                assert patient is not None and b"female" in patient.body  # the later writer's
            logged = conn.execute(
                select(events_table.c.record_uuid, events_table.c.action)
                .where(events_table.c.origin == "n2")
                .order_by(events_table.c.id)
            ).all()
        assert [tuple(r) for r in logged] == [("p-b", "UPDATED"), ("p-a", "UPDATED")]
    finally:
        db.dispose()
