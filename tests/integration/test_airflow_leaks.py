"""Team A's reader across every many-DAG read: no trace of team B, counts that add up.

Team B's DAG has runs and task instances, Airflow has event logs for it, and a team B file that
fails to import (deploy/local/dags/_team_b_broken.py) — none of it may reach amy.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import pytest
from devstack import LocalStack

from tests.integration.support import bearer

READABLE = {"shared_housekeeping", "team_a_etl", "team_a_reporting"}
API = "/airflow/api/v2"


def _no_team_b(data: Any) -> None:
    text = json.dumps(data)
    assert "team_b" not in text and "team-b" not in text, text[:2000]


@pytest.fixture(scope="module")
def team_b_traces(stack: LocalStack) -> None:
    """Runs of both teams, and the broken team B file's import error, exist in Airflow."""
    for dag in ("team_b_ingest", "team_a_etl"):
        status, run = stack.airflow.request("POST", f"/dags/{dag}/dagRuns",
                                            {"logical_date": None})
        assert status == 200, run
    deadline = time.monotonic() + 60
    while True:
        _, errors = stack.airflow.request("GET", "/importErrors")
        _, tis = stack.airflow.request("GET", "/dags/team_b_ingest/dagRuns/~/taskInstances")
        if errors["total_entries"] and tis["total_entries"]:
            break
        assert time.monotonic() < deadline, (errors, tis)
        time.sleep(1)


def _get(proxy: httpx2.Client, token: str, path: str, **params: Any) -> Any:
    response = proxy.get(API + path, params=params, headers=bearer(token))
    assert response.status_code == 200, (path, response.text)
    return response.json()


def _post(proxy: httpx2.Client, token: str, path: str, body: Any) -> Any:
    response = proxy.post(API + path, json=body, headers=bearer(token))
    assert response.status_code == 200, (path, response.text)
    return response.json()


@pytest.mark.usefixtures("team_b_traces")
def test_team_a_reader_sees_no_trace_of_team_b(proxy: httpx2.Client,
                                               tokens: dict[str, str]) -> None:
    amy = tokens["amy"]
    dags = _get(proxy, amy, "/dags", limit=100)
    assert {d["dag_id"] for d in dags["dags"]} == READABLE
    assert dags["total_entries"] == 3
    for pattern in ("team_b", "%", "~", "team_|nope", "_", "TEAM_B"):
        found = _get(proxy, amy, "/dags", dag_id_pattern=pattern)
        _no_team_b(found)
        assert found["total_entries"] == len(found["dags"])

    for path, key in (("/dags/~/dagRuns", "dag_runs"),
                      ("/dags/~/dagRuns/~/taskInstances", "task_instances"),
                      ("/eventLogs", "event_logs"),
                      ("/importErrors", "import_errors"),
                      ("/dagWarnings", "dag_warnings"),
                      ("/dagStats", "dags"),
                      ("/dagTags", "tags")):
        data = _get(proxy, amy, path, limit=100)
        _no_team_b(data)
        assert data["total_entries"] == len(data[key]), path
    assert _get(proxy, amy, "/importErrors")["total_entries"] == 0  # an orphan file: admins
    assert {d["dag_id"] for d in _get(proxy, amy, "/dagStats")["dags"]} <= READABLE
    assert set(_get(proxy, amy, "/dagTags")["tags"]) <= {"team-a", "shared"}
    runs = _get(proxy, amy, "/dags/~/dagRuns", limit=100)
    assert runs["dag_runs"], "team A's runs are visible"
    assert _get(proxy, amy, "/backfills", dag_id="team_b_ingest")["total_entries"] == 0
    assert _get(proxy, amy, "/eventLogs", dag_id="team_b_ingest")["total_entries"] == 0

    for body in ({}, {"dag_ids": ["team_b_ingest"]}, {"dag_ids": ["team_b_ingest",
                                                                  "team_a_etl"]}):
        batch = _post(proxy, amy, "/dags/~/dagRuns/list", {**body, "page_limit": 100})
        _no_team_b(batch)
        assert batch["total_entries"] == len(batch["dag_runs"])
        tis = _post(proxy, amy, "/dags/~/dagRuns/~/taskInstances/list",
                    {**body, "page_limit": 100})
        _no_team_b(tis)
        assert tis["total_entries"] == len(tis["task_instances"])
    stats = _get(proxy, amy, "/dagStats", dag_ids=["team_b_ingest", "team_a_etl"])
    assert [d["dag_id"] for d in stats["dags"]] == ["team_a_etl"]


@pytest.mark.usefixtures("team_b_traces")
def test_pages_of_a_filtered_list_add_up(proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    amy = tokens["amy"]
    whole = _get(proxy, amy, "/dags/~/dagRuns", limit=100, order_by="id")
    pages = [_get(proxy, amy, "/dags/~/dagRuns", limit=1, offset=i, order_by="id")
             for i in range(whole["total_entries"] + 1)]
    assert [p["total_entries"] for p in pages] == [whole["total_entries"]] * len(pages)
    assert [r["dag_run_id"] for p in pages for r in p["dag_runs"]] == [
        r["dag_run_id"] for r in whole["dag_runs"]]


@pytest.mark.usefixtures("team_b_traces")
def test_admin_sees_everything(proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    carol = tokens["carol"]
    errors = _get(proxy, carol, "/importErrors")
    assert any("_team_b_broken.py" in e["filename"] for e in errors["import_errors"])
    assert "team_b_ingest" in json.dumps(_get(proxy, carol, "/dags/~/dagRuns", limit=100))
    assert "team-b" in _get(proxy, carol, "/dagTags")["tags"]
