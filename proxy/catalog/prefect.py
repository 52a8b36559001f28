"""Prefect 3.9.1 server API (`/api`) — the starter catalog.

What the stock client needs to run a flow and report it, reading deployments, and running a
deployment. Operation names follow the server's route function names. Checked against
prefect 3.9.1's `/api/openapi.json`; websockets are not in OpenAPI and are named by path.
Every route not listed here is denied ("operation not in catalog").

Workflow ids are `<flow-name>/<deployment-name>`; an ad-hoc run's is `<flow-name>/-`.
"""

from __future__ import annotations

from proxy.catalog.operation import Action, Catalog, Operation, Scope

SYSTEM = "prefect"


def _op(name: str, method: str, template: str, action: Action, **kw: object) -> Operation:
    return Operation(SYSTEM, name, method, template, action, **kw)  # type: ignore[arg-type]


CATALOG = Catalog(SYSTEM, (
    # Every client calls these first; a failure aborts it (DESIGN.md §5).
    _op("read_version", "GET", "/admin/version", Action.READ, scope=Scope.NONE),
    _op("create_csrf_token", "GET", "/csrf-token", Action.READ, scope=Scope.NONE),
    _op("read_storage", "GET", "/admin/storage", Action.READ, scope=Scope.NONE),
    _op("health_check", "GET", "/health", Action.READ, scope=Scope.NONE),
    _op("ready_check", "GET", "/ready", Action.READ, scope=Scope.NONE),
    # Flows. POST /flows/ returns the existing flow when the name exists: every ad-hoc run
    # calls it, so it is the run right on `<flow>/-`.
    _op("create_flow", "POST", "/flows/", Action.RUN, scope=Scope.BODY, param="name",
        resolver="flow_name"),
    _op("read_flow", "GET", "/flows/{id}", Action.READ, param="id", resolver="flow_id"),
    _op("read_flows", "POST", "/flows/filter", Action.READ, scope=Scope.LIST, list_key=".",
        resolver="flow_item"),
    # Flow runs: with `deployment_id` it is "run that deployment".
    _op("create_flow_run", "POST", "/flow_runs/", Action.RUN, scope=Scope.BODY,
        resolver="flow_run_create", inspect_body=True),
    _op("read_flow_run", "GET", "/flow_runs/{id}", Action.READ, param="id",
        resolver="flow_run_id"),
    _op("update_flow_run", "PATCH", "/flow_runs/{id}", Action.RUN, param="id",
        resolver="flow_run_id"),
    _op("set_flow_run_state", "POST", "/flow_runs/{id}/set_state", Action.RUN, param="id",
        resolver="flow_run_id"),
    _op("update_flow_run_labels", "PATCH", "/flow_runs/{id}/labels", Action.RUN, param="id",
        resolver="flow_run_id"),
    # Task runs belong to their flow run's workflow.
    _op("create_task_run", "POST", "/task_runs/", Action.RUN, scope=Scope.BODY,
        param="flow_run_id", resolver="flow_run_id"),
    _op("read_task_run", "GET", "/task_runs/{id}", Action.READ, param="id",
        resolver="task_run_id"),
    _op("set_task_run_state", "POST", "/task_runs/{id}/set_state", Action.RUN, param="id",
        resolver="task_run_id"),
    _op("create_logs", "POST", "/logs/", Action.RUN, scope=Scope.BODY, resolver="logs"),
    # Deployments.
    _op("read_deployments", "POST", "/deployments/filter", Action.READ, scope=Scope.LIST,
        list_key=".", resolver="deployment_item"),
    _op("read_deployment", "GET", "/deployments/{id}", Action.READ, param="id",
        resolver="deployment_id"),
    _op("read_deployment_by_name", "GET", "/deployments/name/{flow_name}/{deployment_name}",
        Action.READ, resolver="deployment_name"),
    # Overriding job_variables (image, command, env) needs deploy; see ownership.py.
    _op("create_flow_run_from_deployment", "POST", "/deployments/{id}/create_flow_run",
        Action.RUN, param="id", resolver="deployment_id", inspect_body=True),
    # Every flow run and worker streams events here; task-run state travels only here.
    _op("events_in", "WEBSOCKET", "/events/in", Action.RUN, scope=Scope.NONE),
))
