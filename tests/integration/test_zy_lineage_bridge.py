"""Acceptance for lineage: a person starts a Prefect flow; its bridge task runs an Airflow DAG
as the flow's service account; the trail shows person → flow run → DAG run, and both runs
carry the stamps (Prefect tags, Airflow note). Named to run after the other integration tests:
its flow, team-a-bridge, would show in their exact lists of team A's flows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devstack import LocalStack
from upstreams import PREFECT_VENV

from tests.harness import REPO

API = "/prefect/api"


def test_a_flow_started_by_a_person_runs_a_dag_as_its_service_account(
        stack: LocalStack, tokens: dict[str, str], tmp_path: Path) -> None:
    human, machine = tokens["alice"], tokens["ci-team-a"]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path),
        "PREFECT_API_URL": stack.orchgate_url + API,
        "PREFECT_API_KEY": human,
        "PREFECT_CLIENT_CUSTOM_HEADERS": json.dumps({"Authorization": f"Bearer {human}"}),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(REPO),  # proxy/bridge.py: stdlib + httpx only
        "ORCHGATE_URL": stack.orchgate_url,
        "ORCHGATE_BRIDGE_TOKEN": machine,
    }
    done = subprocess.run([str(PREFECT_VENV / "bin/python"), str(REPO / "examples/bridge_flow.py")],
                          env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    flow_run_id, dag_run_id = result["flow_run_id"], result["dag_run_id"]
    assert result["state"] == "success"

    # Airflow: the run succeeded, and its note names the caller and the parent run.
    status, run = stack.airflow.request("GET", f"/dags/team_a_etl/dagRuns/{dag_run_id}")
    assert status == 200 and run["state"] == "success"
    assert "ci-team-a" in run["note"] and f"Parent run: prefect:{flow_run_id}" in run["note"]
    # Prefect: the flow run names the person who started it.
    status, flow_run = stack.prefect.request("GET", f"/flow_runs/{flow_run_id}")
    assert status == 200 and flow_run["state_type"] == "COMPLETED"
    assert "orchgate.user:alice" in flow_run["tags"]

    lineage = subprocess.run(
        [sys.executable, "-m", "proxy", "audit", "lineage", f"airflow:team_a_etl/{dag_run_id}",
         str(stack.audit_file)], capture_output=True, text=True, timeout=60, check=False)
    assert lineage.returncode == 0, lineage.stderr
    first, second = lineage.stdout.strip().splitlines()
    assert first.startswith(f"user:alice (human) created prefect:{flow_run_id} "
                            "[team-a-bridge/-]")
    assert f"sa:ci-team-a (machine) created airflow:team_a_etl/{dag_run_id}" in second


def test_the_trail_of_the_whole_run_verifies(stack: LocalStack) -> None:
    done = subprocess.run([sys.executable, "-m", "proxy", "audit", "verify",
                           str(stack.audit_file)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "OK: the chain is intact" in done.stdout
