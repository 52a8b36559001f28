"""Through orchgate to the real Prefect 3.9.1, with tokens from the real identity provider."""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx2
from devstack import LocalStack
from upstreams import PREFECT_VENV

from tests.integration.support import FLOWS, bearer

API = "/prefect/api"


def _flow_runs_of(stack: LocalStack, deployment_id: str) -> list[dict[str, object]]:
    status, runs = stack.prefect.request(
        "POST", "/flow_runs/filter",
        {"deployments": {"id": {"any_": [deployment_id]}}, "limit": 200})
    assert status == 200, runs
    return list(runs)


def test_read_deployments_shows_only_what_the_caller_may_read(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    response = proxy.post(f"{API}/deployments/filter", json={}, headers=bearer(tokens["alice"]))
    assert response.status_code == 200, response.text
    names = sorted(d["name"] for d in response.json())
    assert names == ["daily", "nightly"]  # team-a-etl/nightly and shared-housekeeping/daily
    by_name = proxy.get(f"{API}/deployments/name/team-a-etl/nightly",
                        headers=bearer(tokens["amy"]))
    assert by_name.status_code == 200
    other = proxy.get(f"{API}/deployments/name/team-b-ingest/hourly",
                      headers=bearer(tokens["amy"]))
    assert other.status_code == 403


def test_create_flow_run_from_a_deployment(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    deployment_id = stack.deployments["team-a-etl/nightly"]
    before = len(_flow_runs_of(stack, deployment_id))
    response = proxy.post(f"{API}/deployments/{deployment_id}/create_flow_run", json={},
                          headers=bearer(tokens["alice"]))
    assert response.status_code == 201, response.text
    assert len(_flow_runs_of(stack, deployment_id)) == before + 1
    record = stack.audit_record(response.headers["x-request-id"])
    assert record["workflows"] == ["team-a-etl/nightly"]
    assert record["decision"] == "allow"


def test_denied_run_of_another_teams_deployment_never_reaches_prefect(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    deployment_id = stack.deployments["team-b-ingest/hourly"]
    before = len(_flow_runs_of(stack, deployment_id))
    for persona in ("alice", "amy", "dave"):
        response = proxy.post(f"{API}/deployments/{deployment_id}/create_flow_run", json={},
                              headers=bearer(tokens[persona]))
        assert response.status_code == 403, (persona, response.text)
    # Overriding job variables is a change to the deployment: the run right is not enough.
    bob = proxy.post(f"{API}/deployments/{deployment_id}/create_flow_run",
                     json={"job_variables": {"command": "sh -c 'id'"}},
                     headers=bearer(tokens["bob"]))
    assert bob.status_code == 403
    assert len(_flow_runs_of(stack, deployment_id)) == before


def test_a_real_flow_runs_through_the_proxy_with_its_task_runs(
        stack: LocalStack, tokens: dict[str, str], tmp_path: object) -> None:
    token = tokens["alice"]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path),
        "PREFECT_API_URL": stack.orchgate_url + API,
        "PREFECT_API_KEY": token,
        # Prefect 3.9.1 sends PREFECT_API_KEY on HTTP requests only; its event socket to a
        # self-hosted URL carries no credential unless the header reaches the upgrade.
        "PREFECT_CLIENT_CUSTOM_HEADERS": json.dumps({"Authorization": f"Bearer {token}"}),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    done = subprocess.run([str(PREFECT_VENV / "bin/python"), str(FLOWS / "adhoc_flow.py")],
                          env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    flow_run_id = json.loads(done.stdout.strip().splitlines()[-1])["flow_run_id"]

    status, run = stack.prefect.request("GET", f"/flow_runs/{flow_run_id}")
    assert status == 200
    assert run["state_type"] == "COMPLETED"
    # Task-run state travels only over the /events/in socket: the server records the task
    # runs from those events, shortly after they arrive.
    deadline = time.monotonic() + 30
    while True:
        status, task_runs = stack.prefect.request(
            "POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        assert status == 200
        states = sorted(t["state_type"] for t in task_runs)
        if states == ["COMPLETED", "COMPLETED"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert states == ["COMPLETED", "COMPLETED"]
    sockets = [r for r in stack.audit_records() if r["operation"] == "stream_events_in"
               and r["principal"] and r["principal"]["sub"] == "alice"]  # type: ignore[index]
    assert sockets, "the event socket was not bridged"
    assert any(r["notes"]["websocket"]["frames_in"] > 0 for r in sockets  # type: ignore[index]
               if "notes" in r)
