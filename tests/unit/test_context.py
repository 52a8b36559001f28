"""proxy.context: request ids."""

from __future__ import annotations

import os
import uuid

from proxy.context import request_id


def test_request_ids_are_distinct_version_4_uuids() -> None:
    ids = [request_id() for _ in range(1000)]  # several refills of the pool
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)


def test_a_forked_child_does_not_hand_out_its_parents_ids() -> None:
    request_id()  # the pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id must not be the parent's next one
        os.write(write, request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child != request_id()
