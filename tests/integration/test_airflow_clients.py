"""The stock clients, unmodified, through orchgate: apache-airflow-client 3.3.2 (strict response
models) and airflowctl (token from AIRFLOW_CLI_TOKEN) — list, trigger, wait, pause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import airflow_client.client as af
import pytest
from airflow_client.client.api.dag_api import DAGApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.api.task_instance_api import TaskInstanceApi
from airflow_client.client.models.dag_patch_body import DAGPatchBody
from airflow_client.client.models.dag_runs_batch_body import DAGRunsBatchBody
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody
from devstack import LocalStack

AIRFLOWCTL = Path(sys.executable).parent / "airflowctl"


def _client(stack: LocalStack, token: str) -> af.ApiClient:
    return af.ApiClient(af.Configuration(host=stack.orchgate_url + "/airflow",
                                         access_token=token))


def test_apache_airflow_client_lists_triggers_waits_and_pauses(
        stack: LocalStack, tokens: dict[str, str]) -> None:
    with _client(stack, tokens["alice"]) as api:
        dags = DAGApi(api).get_dags(limit=100)
        assert sorted(d.dag_id for d in dags.dags) == [
            "shared_housekeeping", "team_a_etl", "team_a_reporting"]
        assert dags.total_entries == 3

        runs = DagRunApi(api)
        run = runs.trigger_dag_run("team_a_etl", TriggerDAGRunPostBody(logical_date=None,
                                                                       note="from the client"))
        assert run.note is not None
        assert run.note.startswith("from the client\n\nTriggered through orchgate by alice")
        # The wait endpoint streams NDJSON; the client reads it whole when the run ends.
        waited = runs.wait_dag_run_until_finished("team_a_etl", run.dag_run_id, interval=1,
                                                  _request_timeout=120)
        assert json.loads(str(waited).strip().splitlines()[-1])["state"] == "success"

        every = runs.get_dag_runs("~", limit=100)  # strict models: a filtered list parses
        assert {r.dag_id for r in every.dag_runs} <= {"shared_housekeeping", "team_a_etl",
                                                      "team_a_reporting"}
        assert every.total_entries == len(every.dag_runs)
        batch = runs.get_list_dag_runs_batch("~", DAGRunsBatchBody(
            dag_ids=["team_a_etl", "team_b_ingest"], page_limit=100))
        assert {r.dag_id for r in batch.dag_runs} == {"team_a_etl"}
        tis = TaskInstanceApi(api).get_task_instances("~", "~", limit=100)
        assert {t.dag_id for t in tis.task_instances} <= {"shared_housekeeping", "team_a_etl",
                                                          "team_a_reporting"}

        for paused in (True, False):
            dag = DAGApi(api).patch_dag("team_a_reporting", DAGPatchBody(is_paused=paused))
            assert dag.is_paused is paused
        with pytest.raises(af.ApiException) as denied:
            DAGApi(api).patch_dag("team_b_ingest", DAGPatchBody(is_paused=True))
        assert denied.value.status == 403


def _ctl(home: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW_CLI_TOKEN=token)
    return subprocess.run([str(AIRFLOWCTL), *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_airflowctl_lists_triggers_and_pauses(stack: LocalStack, tokens: dict[str, str],
                                              tmp_path: Path) -> None:
    token = tokens["ci-team-a"]
    login = _ctl(tmp_path, token, "auth", "login", "--api-url", stack.orchgate_url + "/airflow",
                 "--api-token", token, "--skip-keyring")
    assert login.returncode == 0, login.stderr

    listed = _ctl(tmp_path, token, "dags", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert "team_a_etl" in listed.stdout
    assert "team_b_ingest" not in listed.stdout and "shared_housekeeping" not in listed.stdout

    triggered = _ctl(tmp_path, token, "dags", "trigger", "team_a_reporting", "-o", "json")
    assert triggered.returncode == 0, triggered.stderr
    assert "Triggered through orchgate by ci-team-a" in triggered.stdout

    paused = _ctl(tmp_path, token, "dags", "pause", "team_a_reporting")
    assert paused.returncode == 0, paused.stderr
    status, dag = stack.airflow.request("GET", "/dags/team_a_reporting")
    assert status == 200 and dag["is_paused"] is True
    unpaused = _ctl(tmp_path, token, "dags", "unpause", "team_a_reporting")
    assert unpaused.returncode == 0, unpaused.stderr
    deadline = time.monotonic() + 10
    while stack.airflow.request("GET", "/dags/team_a_reporting")[1]["is_paused"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    refused = _ctl(tmp_path, token, "dags", "pause", "team_b_ingest")
    assert refused.returncode != 0 or "403" in refused.stdout + refused.stderr
    status, dag = stack.airflow.request("GET", "/dags/team_b_ingest")
    assert dag["is_paused"] is False
