"""Through orchgate to the real Airflow 3.3.2, with tokens from the real identity provider."""

from __future__ import annotations

import json

import httpx2
from devstack import LocalStack

from tests.integration.support import bearer

TRIGGER = {"logical_date": None}


def _audit_for(stack: LocalStack, request_id: str) -> dict[str, object]:
    return stack.audit_record(request_id)


def _airflow_runs(stack: LocalStack, dag_id: str) -> list[dict[str, object]]:
    status, data = stack.airflow.request("GET", f"/dags/{dag_id}/dagRuns?limit=100")
    assert status == 200, data
    runs: list[dict[str, object]] = data["dag_runs"]
    return runs


def test_list_dags_shows_only_what_the_caller_may_read(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    response = proxy.get("/airflow/api/v2/dags", headers=bearer(tokens["alice"]))
    assert response.status_code == 200, response.text
    body = response.json()
    dag_ids = sorted(d["dag_id"] for d in body["dags"])
    assert dag_ids == ["shared_housekeeping", "team_a_etl", "team_a_reporting"]
    assert body["total_entries"] == 3
    record = _audit_for(stack, response.headers["x-request-id"])
    assert record["principal"]["sub"] == "alice"  # type: ignore[index]
    assert record["operation"] == "get_dags"
    assert record["status"] == 200

    admin = proxy.get("/airflow/api/v2/dags", headers=bearer(tokens["carol"]))
    assert admin.status_code == 200
    assert {d["dag_id"] for d in admin.json()["dags"]} >= {"team_a_etl", "team_b_ingest"}


def test_trigger_is_recorded_as_the_caller_and_streams_until_success(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    response = proxy.post("/airflow/api/v2/dags/team_a_etl/dagRuns", json=TRIGGER,
                          headers=bearer(tokens["alice"]))
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]

    # Airflow itself says who triggered it: the caller, not a shared service identity.
    direct = [r for r in _airflow_runs(stack, "team_a_etl") if r["dag_run_id"] == run_id]
    assert direct
    assert direct[0]["triggering_user_name"] == "alice"

    # The NDJSON wait endpoint streams through the proxy, line by line, until the run ends.
    states = []
    with proxy.stream("GET", f"/airflow/api/v2/dags/team_a_etl/dagRuns/{run_id}/wait",
                      params={"interval": 1}, headers=bearer(tokens["alice"]),
                      timeout=120) as waiting:
        assert waiting.status_code == 200
        for line in waiting.iter_lines():
            if line.strip():
                states.append(json.loads(line)["state"])
    assert states[-1] == "success", states

    record = _audit_for(stack, response.headers["x-request-id"])
    assert record["decision"] == "allow"
    assert record["action"] == "run"
    assert record["workflows"] == ["team_a_etl"]
    assert str(record["rule"]).endswith("policy.csv:16")


def test_denied_trigger_never_reaches_airflow(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    before = len(_airflow_runs(stack, "team_b_ingest"))
    for persona in ("alice", "amy", "dave", "agent-team-b"):
        response = proxy.post("/airflow/api/v2/dags/team_b_ingest/dagRuns", json=TRIGGER,
                              headers=bearer(tokens[persona]))
        assert response.status_code == 403, (persona, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        record = _audit_for(stack, response.headers["x-request-id"])
        assert record["decision"] == "deny"
        assert record["upstream_status"] is None
    assert len(_airflow_runs(stack, "team_b_ingest")) == before


def test_team_b_operator_runs_its_own_dag_but_not_housekeeping(
        proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    own = proxy.post("/airflow/api/v2/dags/team_b_ingest/dagRuns", json=TRIGGER,
                     headers=bearer(tokens["bob"]))
    assert own.status_code == 200, own.text
    shared = proxy.post("/airflow/api/v2/dags/shared_housekeeping/dagRuns", json=TRIGGER,
                        headers=bearer(tokens["bob"]))
    assert shared.status_code == 403
    assert "denied by rule" in shared.json()["detail"]


def test_pause_and_unpause_through_the_proxy(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    for paused in (True, False):
        response = proxy.patch("/airflow/api/v2/dags/team_a_reporting",
                               json={"is_paused": paused}, headers=bearer(tokens["ci-team-a"]))
        assert response.status_code == 200, response.text
        status, dag = stack.airflow.request("GET", "/dags/team_a_reporting")
        assert status == 200
        assert dag["is_paused"] is paused


def test_unauthenticated_and_unknown_operations_fail_closed(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    anonymous = proxy.get("/airflow/api/v2/dags")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    # Airflow has no POST /dags/{dag_id} (it would answer 405): not in the catalog, denied.
    unknown = proxy.post("/airflow/api/v2/dags/team_a_etl", json={},
                         headers=bearer(tokens["carol"]))
    assert unknown.status_code == 403
    assert unknown.json()["type"] == "urn:orchgate:problem:operation-not-in-catalog"
    assert _audit_for(stack, unknown.headers["x-request-id"])["upstream_status"] is None
    for response in (anonymous, unknown):
        assert _audit_for(stack, response.headers["x-request-id"])["status"] in (401, 403)
