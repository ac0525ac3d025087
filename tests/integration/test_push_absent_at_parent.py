"""A push against a parent that does not hold a record the child agreed on with it (lost in a
restore from an older backup, purged): the parent answers the child's ``If-Match`` with 412, and
the record is sent again as new, never kept as a conflict with a "voided" parent copy."""

from __future__ import annotations

import pytest
from sqlalchemy import delete
from tests.conftest import NodeFactory
from tests.integration.conflict_support import edit, open_conflicts, void
from tests.integration.pull_support import held
from tests.integration.test_conflict_rest import create_visittype
from tests.integration.test_push import create_patients, make_pair, open_failures, push

from fhirsync.store.tables import records
from fhirsync.testing.servers import NodeHandle

REST = "/ws/rest/v1"


def _lose(node: NodeHandle, uuid: str) -> None:
    """``node`` no longer holds record ``uuid`` (as after a restore from an older backup)."""
    _config, db = node.open()
    try:
        with db.write() as conn:
            conn.execute(delete(records).where(records.c.uuid == uuid))
    finally:
        db.dispose()


def test_an_edit_of_a_record_the_parent_lost_is_sent_again_as_new(
    node_factory: NodeFactory,
) -> None:
    parent, child = make_pair(node_factory)
    uuid = create_patients(child, 1)[0]
    assert push(child).applied == 1
    _lose(parent, uuid)
    edit(child, uuid, gender="female")
    after = push(child)
    assert (after.outcome, after.failures, after.applied) == ("ok", 0, 1), after
    assert open_conflicts(child) == [] and open_failures(child) == []
    assert held(parent)[("patient", uuid)] == held(child)[("patient", uuid)]
    # Agreed again: the next edit goes up with the new parent version and is accepted.
    edit(child, uuid, birthDate="1980-01-01")
    again = push(child)
    assert (again.outcome, again.failures, again.applied) == ("ok", 0, 1), again
    assert held(parent)[("patient", uuid)] == held(child)[("patient", uuid)]


def test_a_record_voided_at_the_parent_is_still_a_conflict(node_factory: NodeFactory) -> None:
    parent, child = make_pair(node_factory)
    uuid = create_patients(child, 1)[0]
    assert push(child).applied == 1
    void(parent, uuid)
    edit(child, uuid, gender="female")
    after = push(child)
    assert (after.outcome, after.failures) == ("ok", 0), after
    assert [c.record_uuid for c in open_conflicts(child)] == [uuid]
    assert held(parent)[("patient", uuid)][1] == "voided"


def test_a_rest_record_the_parent_purged_is_sent_again_as_new(
    node_factory: NodeFactory,
) -> None:
    parent, child = make_pair(node_factory)
    uuid = create_visittype(child, "Outpatient")
    assert push(child).applied == 1
    with parent.client() as client:
        gone = client.delete(f"{REST}/visittype/{uuid}", params={"purge": "true"})
        assert gone.status_code == 204, gone.text
    with child.client() as client:
        changed = client.post(f"{REST}/visittype/{uuid}", json={"description": "edited"})
        changed.raise_for_status()
    after = push(child)
    assert (after.outcome, after.failures, after.applied) == ("ok", 0, 1), after
    assert open_conflicts(child) == [] and open_failures(child) == []
    assert held(parent)[("visittype", uuid)] == held(child)[("visittype", uuid)]


pytestmark = pytest.mark.timeout(120)
