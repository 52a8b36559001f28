"""Hot reload against the running proxy: a good edit takes effect without a restart, a bad
edit is refused and the old policy keeps serving (and says so in readiness)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.harness import (
    FakeIdP,
    Orchgate,
    RecordingUpstream,
    StartOrchgate,
    bearer,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
DAG = "/airflow/api/v2/dags/team_a_etl"


def _edit(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    # Coarse file systems may keep the same mtime within one tick: move it on explicitly.
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def _gate_on_a_copy(tmp_path: Path, start_orchgate: StartOrchgate) -> tuple[Orchgate, Path]:
    """An orchgate whose policy is a copy of the shipped one, free to edit."""
    policy = tmp_path / "policy.csv"
    shutil.copy(ROOT / "policies/policy.csv", policy)
    return start_orchgate(overrides={"policy": {"files": [str(policy)]}}), policy


def test_a_good_edit_takes_effect_and_a_bad_one_is_refused(
        tmp_path: Path, idp: FakeIdP, upstream: RecordingUpstream,
        start_orchgate: StartOrchgate) -> None:
    gate, policy = _gate_on_a_copy(tmp_path, start_orchgate)
    dave = bearer(idp.token("dave", groups=["newcomers"]))
    original = policy.read_text(encoding="utf-8")

    with gate.client() as client:
        denied = client.get(DAG, headers=dave)
        assert denied.status_code == 403
        assert gate.audit_record(denied.headers["x-request-id"])["policy_generation"] == 1

        _edit(policy, original + "p, group:newcomers, airflow, team:a, read, allow\n")
        wait_for(lambda: client.get("/_orchgate/readyz").json()["checks"]["policy"]
                 ["generation"] == 2, what="the good edit is loaded")
        allowed = client.get(DAG, headers=dave)
        assert allowed.status_code == 200
        record = gate.audit_record(allowed.headers["x-request-id"])
        assert record["policy_generation"] == 2
        assert record["rule"].endswith("policy.csv:34")

        _edit(policy, original + "p, group:newcomers, airflow, team:a, reed, allow\n")
        wait_for(lambda: client.get("/_orchgate/readyz").json()["checks"]["policy"]
                 ["failures"] == 1, what="the bad edit is refused")
        ready = client.get("/_orchgate/readyz")
        assert ready.status_code == 200  # still ready: the last good policy serves
        status = ready.json()["checks"]["policy"]
        assert status["generation"] == 2
        assert "policy.csv:34: unknown action 'reed'" in status["last_error"]
        still = client.get(DAG, headers=dave)
        assert still.status_code == 200
        assert gate.audit_record(still.headers["x-request-id"])["policy_generation"] == 2


def test_a_revoked_grant_is_not_served_from_the_decision_cache(
        tmp_path: Path, idp: FakeIdP, upstream: RecordingUpstream,
        start_orchgate: StartOrchgate) -> None:
    gate, policy = _gate_on_a_copy(tmp_path, start_orchgate)
    amy = bearer(idp.token("amy", groups=["team-a-readers"]))
    with gate.client() as client:
        assert client.get(DAG, headers=amy).status_code == 200
        text = policy.read_text(encoding="utf-8").replace(
            "p, group:team-a-readers, *, team:a, read, allow", "# revoked")
        upstream.reset()
        _edit(policy, text)
        wait_for(lambda: client.get(DAG, headers=amy).status_code == 403,
                 what="the revoked grant stops working")
        assert client.get("/_orchgate/readyz").json()["checks"]["policy"]["generation"] == 2
        upstream.wait_idle()
        reached = len(upstream.requests("/api/v2/dags/team_a_etl"))
        again = client.get(DAG, headers=amy)
        assert again.status_code == 403
        assert gate.audit_record(again.headers["x-request-id"])["decision"] == "deny"
    upstream.wait_idle()
    assert len(upstream.requests("/api/v2/dags/team_a_etl")) == reached
