"""proxy.heap: the collector settings `orchgate serve` runs with, and policy reloads under them."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from proxy import heap
from proxy.policy.reload import PolicyStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tuned() -> Iterator[None]:
    """heap.tune() for one test; the test process gets CPython's settings back after."""
    thresholds = gc.get_threshold()
    heap.tune()
    try:
        yield
    finally:
        heap._tuned = False
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        gc.enable()


def test_nothing_changes_unless_tuned() -> None:
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    heap.settle()
    with heap.building():
        assert gc.isenabled()
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == frozen


@pytest.mark.usefixtures("tuned")
def test_settle_freezes_what_is_alive() -> None:
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    heap.settle()
    assert gc.get_freeze_count() > 1000
    assert gc.get_count()[0] < 100  # the young generation starts empty


@pytest.mark.usefixtures("tuned")
def test_building_nests_and_freezes_what_was_built_before_collections_resume() -> None:
    with heap.building():
        with heap.building():
            assert not gc.isenabled()
        assert not gc.isenabled()
        built = [[i] for i in range(10_000)]  # young, tracked
        assert gc.get_count()[0] >= 10_000
    assert gc.isenabled()
    assert gc.get_count()[0] < 100  # frozen: no collection will walk them
    del built


@pytest.mark.usefixtures("tuned")
def test_reloads_under_a_frozen_heap_free_the_old_snapshot(tmp_path: Path) -> None:
    # A frozen object is never collected, only freed by its reference count: an old snapshot
    # in a reference cycle would stay forever, one more on every reload.
    base = (ROOT / "policies/policy.csv").read_text() + "".join(
        f"p, group:g{i % 50}, airflow, team:t{i % 20}, read, allow\n" for i in range(3000))
    policy = tmp_path / "policy.csv"
    policy.write_text(base)
    store = PolicyStore(ROOT / "policies/model.conf", (policy,), structlog.get_logger())
    heap.settle()
    settled = gc.get_freeze_count()

    async def reload(times: int) -> list[int]:
        frozen = []
        for i in range(times):
            policy.write_text(base + f"# edit {i}\n")
            assert await store.reload()
            assert gc.isenabled()
            frozen.append(gc.get_freeze_count())
        return frozen
    frozen = asyncio.run(reload(6))

    assert store.current.generation == 7
    # Each reload freezes its new snapshot and frees the old one: the frozen count stays
    # where it was (a new snapshot left unfrozen would drop it by one snapshot, a leaked old
    # one raise it by one).
    assert all(abs(count - settled) < 1_000 for count in frozen), (settled, frozen)
    young = len(gc.get_objects())
    kept = store._build(99)
    assert len(gc.get_objects()) - young > 5_000  # what one snapshot is
    del kept
