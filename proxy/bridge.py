"""The bridge: a Prefect task that runs an Airflow DAG through orchgate, as the flow itself.

This module needs only the standard library and httpx — it runs inside a Prefect flow, in
Prefect's environment, where orchgate itself is not installed: put the checkout (or just this
file's package) on PYTHONPATH, or copy the file. It imports nothing else from `proxy`.

    from proxy.bridge import airflow_dag_task
    run_dag = airflow_dag_task()          # a Prefect task
    result = run_dag("team_a_etl", conf={"day": "2026-11-24"})

The task triggers the DAG through orchgate with the flow's own identity (a service account
token: ORCHGATE_BRIDGE_TOKEN, or ORCHGATE_BRIDGE_TOKEN_FILE), sends
`X-Orchgate-Parent-Run: prefect:<this flow run's id>` so orchgate records and stamps the
lineage, polls the DAG run until it ends, and maps Airflow's terminal state onto the task's:
success → Completed (the result names the run and its URL), failed / upstream_failed → Failed.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

PARENT_HEADER = "X-Orchgate-Parent-Run"
SUCCEEDED = frozenset({"success"})
FAILED = frozenset({"failed", "upstream_failed"})


class BridgeError(Exception):
    """The DAG run could not be started, or did not end in time."""


@dataclass(frozen=True, slots=True)
class DagRun:
    dag_id: str
    dag_run_id: str
    state: str
    url: str  # the run through orchgate's Airflow API

    @property
    def succeeded(self) -> bool:
        return self.state in SUCCEEDED


def bridge_token() -> str:
    token = os.environ.get("ORCHGATE_BRIDGE_TOKEN")
    if not token and os.environ.get("ORCHGATE_BRIDGE_TOKEN_FILE"):
        token = Path(os.environ["ORCHGATE_BRIDGE_TOKEN_FILE"]).read_text(encoding="utf-8")
    if not token:
        raise BridgeError("no service account token: set ORCHGATE_BRIDGE_TOKEN(_FILE)")
    return token.strip()


def run_dag(orchgate_url: str, token: str, dag_id: str, *, conf: dict[str, Any] | None = None,
            parent: str | None = None, timeout: float = 600.0, poll: float = 2.0,
            client: httpx.Client | None = None) -> DagRun:
    """Trigger `dag_id` through orchgate and wait for the run to end."""
    base = f"{orchgate_url.rstrip('/')}/airflow/api/v2/dags/{quote(dag_id, safe='')}/dagRuns"
    headers = {"Authorization": f"Bearer {token}"}
    if parent:
        headers[PARENT_HEADER] = parent
    own = client is None
    http = client or httpx.Client(timeout=30, trust_env=False)
    try:
        started = http.post(base, json={"logical_date": None, "conf": conf or {}},
                            headers=headers)
        if started.status_code not in (200, 201):
            raise BridgeError(f"triggering {dag_id} answered HTTP {started.status_code}: "
                              f"{_problem(started)}")
        run_id = str(started.json()["dag_run_id"])
        url = f"{base}/{quote(run_id, safe='')}"
        deadline = time.monotonic() + timeout
        while True:
            answer = http.get(url, headers={"Authorization": headers["Authorization"]})
            if answer.status_code != 200:
                raise BridgeError(f"reading run {run_id} answered HTTP {answer.status_code}: "
                                  f"{_problem(answer)}")
            state = str(answer.json().get("state"))
            if state in SUCCEEDED | FAILED:
                return DagRun(dag_id, run_id, state, url)
            if time.monotonic() > deadline:
                raise BridgeError(f"run {run_id} of {dag_id} still {state} after {timeout:g} s")
            time.sleep(poll)
    finally:
        if own:
            http.close()


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail") or body.get("title") or body)[:200] if isinstance(
        body, dict) else str(body)[:200]


def airflow_dag_task(orchgate_url: str | None = None, **task_options: Any) -> Any:
    """A Prefect task `(dag_id, conf=None, timeout=600) -> dict` (imports Prefect lazily)."""
    from prefect import task
    from prefect.runtime import flow_run
    from prefect.states import Failed

    @task(name="run-airflow-dag", **task_options)  # type: ignore[untyped-decorator]
    def run_airflow_dag(dag_id: str, conf: dict[str, Any] | None = None,
                        timeout: float = 600.0) -> Any:
        url = orchgate_url or os.environ["ORCHGATE_URL"]
        parent = f"prefect:{flow_run.id}" if flow_run.id else None
        run = run_dag(url, bridge_token(), dag_id, conf=conf, parent=parent, timeout=timeout)
        result = asdict(run)
        if run.succeeded:
            return result  # Completed
        return Failed(message=f"DAG run {run.dag_run_id} of {dag_id} ended {run.state}: "
                              f"{run.url}", data=result)
    return run_airflow_dag
