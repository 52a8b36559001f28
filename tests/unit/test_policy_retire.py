"""proxy.policy: a retired snapshot is freed a piece at a time — unless something still uses it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from proxy.catalog.operation import Action
from proxy.policy import reload
from proxy.policy.engine import PolicySnapshot, compile_policy
from proxy.policy.model import load_policy

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "policies/model.conf"
WHO = ("user:alice", "group:team-a-deployers")


def test_dismantle_empties_the_snapshot() -> None:
    snapshot = compile_policy(load_policy(MODEL, [ROOT / "policies/policy.csv"]), 1)
    assert snapshot.decide(WHO, "airflow", "team_a_etl", Action.DEPLOY).allowed
    digest = snapshot.digest

    snapshot.dismantle()

    assert snapshot.source.rules == () and snapshot.source.ownerships == ()
    assert not snapshot._index and not snapshot._cache and not snapshot._owners
    assert snapshot.digest == digest  # still says which policy it was


def test_only_snapshots_nobody_holds_are_dismantled(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.csv"
    policy.write_text((ROOT / "policies/policy.csv").read_text())
    store = reload.PolicyStore(MODEL, (policy,), structlog.get_logger())
    dismantled: list[int] = []
    real = PolicySnapshot.dismantle

    def dismantle(self: PolicySnapshot) -> None:
        dismantled.append(self.generation)
        real(self)
    monkeypatch.setattr(PolicySnapshot, "dismantle", dismantle)

    async def edits() -> PolicySnapshot:
        policy.write_text(policy.read_text() + "# one\n")
        assert await store.reload()  # generation 1 retired: nobody holds it
        held = store.current  # a request between two steps holds generation 2 …
        policy.write_text(policy.read_text() + "# two\n")
        assert await store.reload()
        policy.write_text(policy.read_text())  # touched, unchanged: the new build (4) dropped
        assert await store.reload()
        return held
    held = asyncio.run(edits())

    assert dismantled == [1, 4]  # … so it was left whole,
    assert held.generation == 2 and held.decide(WHO, "airflow", "team_a_etl",
                                                Action.DEPLOY).allowed  # and still decides
    assert store.current.generation == 3
