"""store/bulk: uuids are valid version-4 uuids, unique, and a forked process gets its own."""

from __future__ import annotations

import os
import uuid

from fhirsync.store import bulk


def test_random_uuids_are_version_4_and_unique() -> None:
    values = bulk.random_uuids(2000) + [bulk.fresh_uuid() for _ in range(2000)]
    assert len(set(values)) == len(values)
    for value in values[:50] + values[-50:]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_process_does_not_reuse_the_parents_pool() -> None:
    bulk.fresh_uuid()  # the pool now holds uuids this process will hand out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next uuid and leave at once
        os.write(write, bulk.fresh_uuid().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = [bulk.fresh_uuid() for _ in range(bulk._POOL_SIZE)]
    assert child not in mine
