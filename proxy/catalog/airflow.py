"""Airflow 3.3.2 public API (`/api/v2`) — the starter catalog.

Checked against apache-airflow 3.3.2's `/openapi.json`. Operation names are its operationIds.
Every operation not listed here is denied ("operation not in catalog").
"""

from __future__ import annotations

from proxy.catalog.operation import Action, Catalog, Operation, Scope

SYSTEM = "airflow"


def _op(name: str, method: str, template: str, action: Action, **kw: object) -> Operation:
    return Operation(SYSTEM, name, method, template, action, **kw)  # type: ignore[arg-type]


CATALOG = Catalog(SYSTEM, (
    _op("get_health", "GET", "/monitor/health", Action.READ, scope=Scope.NONE),
    _op("get_version", "GET", "/version", Action.READ, scope=Scope.NONE),
    _op("get_dags", "GET", "/dags", Action.READ, scope=Scope.LIST, list_key="dags"),
    _op("get_dag", "GET", "/dags/{dag_id}", Action.READ, param="dag_id"),
    _op("get_dag_details", "GET", "/dags/{dag_id}/details", Action.READ, param="dag_id"),
    # Pausing and unpausing is operating a workflow, like triggering it: the run right.
    # Airflow 3.3.2's PATCH /dags/{dag_id} changes nothing but `is_paused`.
    _op("patch_dag", "PATCH", "/dags/{dag_id}", Action.RUN, param="dag_id"),
    _op("get_dag_runs", "GET", "/dags/{dag_id}/dagRuns", Action.READ, param="dag_id",
        list_key="dag_runs"),
    _op("get_dag_run", "GET", "/dags/{dag_id}/dagRuns/{dag_run_id}", Action.READ,
        param="dag_id"),
    _op("trigger_dag_run", "POST", "/dags/{dag_id}/dagRuns", Action.RUN, param="dag_id"),
    # NDJSON, one line per poll interval until the run ends: streamed, never buffered.
    _op("wait_dag_run_until_finished", "GET", "/dags/{dag_id}/dagRuns/{dag_run_id}/wait",
        Action.READ, param="dag_id", streaming=True),
))
