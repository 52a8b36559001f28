"""Prefect 3.9.1 server API (`/api`) — every route: 188 HTTP operations and 5 websockets.

Checked against prefect 3.9.1's `/api/openapi.json` and its router (websockets are not in
OpenAPI: prefect/server/api/{events,logs,task_runs,workers}.py); tests/integration compares
this catalog with the live server. Operation names are the server's route function names
(`_pool`/`_v1`/... suffixes only where Prefect reuses a name). Anything else is denied.

Workflow ids are `<flow-name>/<deployment-name>`; an ad-hoc run's is `<flow-name>/-`; "*" (scope
SYSTEM) stands for every workflow, so server-wide objects need the right on all of them.

How each group is decided (the resolver names are in proxy/resolve/prefect.py):
- always needed (version, CSRF token, storage, health): any authenticated caller;
- flows: the flow's ad-hoc workflow `<flow>/-`; `POST /flows/` upserts, so it is run, not deploy;
  deleting a flow deletes its deployments and runs: deploy on all of them;
- deployments: `<flow>/<name>`; creating one overwrites a same-named one, and both have that
  workflow id, so deploy on it covers the existing one (and its owner tags, if used);
- flow runs, task runs, states, inputs, logs, artifacts: the run's workflow (a flow run's
  `deployment_id` never changes; a task run belongs to its flow run);
- reads over many workflows (`*/filter`, `*/count`, `*/paginate`, `*/history`, `/ui/*`, events,
  logs): scope LIST with `resolver` naming the kind; the caller's readable scope is injected
  into the body (proxy/prefect/scoped.py), responses are filtered again as a safety net;
- workers: a worker is a caller holding run on the deployments whose runs it executes; pool
  reads and heartbeats need run somewhere, scheduled runs handed out are filtered to those;
- automations: run (or deploy) on every deployment their actions name; actions on inferred
  targets, webhooks and notifications reach any workflow: admin on "*";
- blocks (they hold secrets): read by who may run somewhere, written by who may deploy
  somewhere; block types/schemas, variables, pools, queues, limits: read by any caller,
  written by admins ("*"), except what runs need at run time (concurrency slots: run).
"""

from __future__ import annotations

from proxy.catalog.operation import Action, Catalog, Operation, Scope

SYSTEM = "prefect"
READ, RUN, DEPLOY, ADMIN = Action.READ, Action.RUN, Action.DEPLOY, Action.ADMIN


def _op(name: str, method: str, template: str, action: Action, **kw: object) -> Operation:
    # Every Prefect POST that needs only read is a query (filter, count, paginate, history,
    # validate, concurrency_status in 3.9.1's routes): safe to retry.
    kw.setdefault("pure_read", method == "POST" and action == READ)
    return Operation(SYSTEM, name, method, template, action, **kw)  # type: ignore[arg-type]


def anyone(name: str, method: str, template: str, action: Action = READ) -> Operation:
    """No workflow: READ for any authenticated caller, more for who holds it somewhere."""
    return _op(name, method, template, action, scope=Scope.NONE)


def system(name: str, method: str, template: str, action: Action) -> Operation:
    """A server-wide object: decided on "*" (the action on every workflow)."""
    return _op(name, method, template, action, scope=Scope.SYSTEM, resolver="system")


def path(name: str, method: str, template: str, action: Action, resolver: str,
         param: str = "id", body: bool = False) -> Operation:
    return _op(name, method, template, action, param=param, resolver=resolver,
               inspect_body=body)


def body(name: str, method: str, template: str, action: Action, resolver: str,
         param: str = "") -> Operation:
    return _op(name, method, template, action, scope=Scope.BODY, param=param,
               resolver=resolver)


def scoped(name: str, method: str, template: str, kind: str, action: Action = READ
           ) -> Operation:
    """Over many workflows: the caller's scope is injected (proxy/prefect/scoped.py)."""
    return _op(name, method, template, action, scope=Scope.LIST, resolver=kind,
               inspect_body=method != "GET")


OPERATIONS: tuple[Operation, ...] = (
    # -- always needed (DESIGN.md §5): a failure here aborts every client ---------------------
    anyone("read_version", "GET", "/admin/version"),
    anyone("create_csrf_token", "GET", "/csrf-token"),
    anyone("read_server_default_result_storage", "GET", "/admin/storage"),
    anyone("health_check", "GET", "/health"),
    anyone("perform_readiness_check", "GET", "/ready"),
    anyone("server_version", "GET", "/version"),
    anyone("hello", "GET", "/hello"),
    system("read_settings", "GET", "/admin/settings", ADMIN),
    system("update_server_default_result_storage", "PUT", "/admin/storage", ADMIN),
    system("clear_server_default_result_storage", "DELETE", "/admin/storage", ADMIN),
    # -- flows ----------------------------------------------------------------------------------
    body("create_flow", "POST", "/flows/", RUN, "flow_name", param="name"),
    path("read_flow", "GET", "/flows/{id}", READ, "flow_id"),
    path("read_flow_by_name", "GET", "/flows/name/{name}", READ, "flow_name", param="name"),
    path("update_flow", "PATCH", "/flows/{id}", DEPLOY, "flow_id"),
    path("delete_flow", "DELETE", "/flows/{id}", DEPLOY, "flow_all"),
    scoped("read_flows", "POST", "/flows/filter", "flows"),
    scoped("count_flows", "POST", "/flows/count", "flows"),
    scoped("paginate_flows", "POST", "/flows/paginate", "flows"),
    scoped("bulk_delete_flows", "POST", "/flows/bulk_delete", "flows", DEPLOY),
    scoped("count_deployments_by_flow", "POST", "/ui/flows/count-deployments", "flow_ids"),
    scoped("next_runs_by_flow", "POST", "/ui/flows/next-runs", "flow_ids"),
    # -- deployments ------------------------------------------------------------------------------
    body("create_deployment", "POST", "/deployments/", DEPLOY, "deployment_create"),
    path("read_deployment", "GET", "/deployments/{id}", READ, "deployment_id"),
    path("read_deployment_by_name", "GET", "/deployments/name/{flow_name}/{deployment_name}",
         READ, "deployment_name"),
    # serve() pauses its deployments on shutdown through this route: its owner may deploy.
    path("update_deployment", "PATCH", "/deployments/{id}", DEPLOY, "deployment_id"),
    path("delete_deployment", "DELETE", "/deployments/{id}", DEPLOY, "deployment_id"),
    path("create_flow_run_from_deployment", "POST", "/deployments/{id}/create_flow_run", RUN,
         "deployment_id", body=True),
    path("bulk_create_flow_runs_from_deployment", "POST",
         "/deployments/{id}/create_flow_run/bulk", RUN, "deployment_id", body=True),
    path("pause_deployment", "POST", "/deployments/{id}/pause_deployment", DEPLOY,
         "deployment_id"),
    path("resume_deployment", "POST", "/deployments/{id}/resume_deployment", DEPLOY,
         "deployment_id"),
    path("schedule_deployment", "POST", "/deployments/{id}/schedule", RUN, "deployment_id"),
    path("create_deployment_schedules", "POST", "/deployments/{id}/schedules", DEPLOY,
         "deployment_id"),
    path("read_deployment_schedules", "GET", "/deployments/{id}/schedules", READ,
         "deployment_id"),
    path("update_deployment_schedule", "PATCH", "/deployments/{id}/schedules/{schedule_id}",
         DEPLOY, "deployment_id"),
    path("delete_deployment_schedule", "DELETE", "/deployments/{id}/schedules/{schedule_id}",
         DEPLOY, "deployment_id"),
    path("work_queue_check_for_deployment", "GET", "/deployments/{id}/work_queue_check", READ,
         "deployment_id"),
    scoped("read_deployments", "POST", "/deployments/filter", "deployments"),
    scoped("count_deployments", "POST", "/deployments/count", "deployments"),
    scoped("paginate_deployments", "POST", "/deployments/paginate", "deployments"),
    scoped("bulk_delete_deployments", "POST", "/deployments/bulk_delete", "deployments",
           DEPLOY),
    # serve()'s runner polls the scheduled runs of its own deployments.
    scoped("get_scheduled_flow_runs_for_deployments", "POST",
           "/deployments/get_scheduled_flow_runs", "deployment_ids", RUN),
    # -- flow runs ------------------------------------------------------------------------------
    # With deployment_id it runs that deployment; job_variables overrides need deploy.
    body("create_flow_run", "POST", "/flow_runs/", RUN, "flow_run_create"),
    path("read_flow_run", "GET", "/flow_runs/{id}", READ, "flow_run_id"),
    path("update_flow_run", "PATCH", "/flow_runs/{id}", RUN, "flow_run_id", body=True),
    path("delete_flow_run", "DELETE", "/flow_runs/{id}", DEPLOY, "flow_run_id"),
    path("set_flow_run_state", "POST", "/flow_runs/{id}/set_state", RUN, "flow_run_id"),
    path("resume_flow_run", "POST", "/flow_runs/{id}/resume", RUN, "flow_run_id"),
    path("update_flow_run_labels", "PATCH", "/flow_runs/{id}/labels", RUN, "flow_run_id"),
    path("read_flow_run_graph_v1", "GET", "/flow_runs/{id}/graph", READ, "flow_run_id"),
    path("read_flow_run_graph_v2", "GET", "/flow_runs/{id}/graph-v2", READ, "flow_run_id"),
    path("download_logs", "GET", "/flow_runs/{id}/logs/download", READ, "flow_run_id"),
    path("create_flow_run_input", "POST", "/flow_runs/{id}/input", RUN, "flow_run_id"),
    path("filter_flow_run_input", "POST", "/flow_runs/{id}/input/filter", READ,
         "flow_run_id"),
    path("read_flow_run_input", "GET", "/flow_runs/{id}/input/{key}", READ, "flow_run_id"),
    path("delete_flow_run_input", "DELETE", "/flow_runs/{id}/input/{key}", RUN,
         "flow_run_id"),
    scoped("read_flow_runs", "POST", "/flow_runs/filter", "flow_runs"),
    scoped("count_flow_runs", "POST", "/flow_runs/count", "flow_runs"),
    scoped("paginate_flow_runs", "POST", "/flow_runs/paginate", "flow_runs"),
    scoped("flow_run_history", "POST", "/flow_runs/history", "flow_runs"),
    scoped("average_flow_run_lateness", "POST", "/flow_runs/lateness", "flow_runs"),
    scoped("read_flow_run_history", "POST", "/ui/flow_runs/history", "flow_runs"),
    scoped("count_task_runs_by_flow_run", "POST", "/ui/flow_runs/count-task-runs",
           "flow_run_ids"),
    scoped("bulk_delete_flow_runs", "POST", "/flow_runs/bulk_delete", "flow_runs_bulk",
           DEPLOY),
    scoped("bulk_set_flow_run_state", "POST", "/flow_runs/bulk_set_state", "flow_runs_bulk",
           RUN),
    path("read_flow_run_state", "GET", "/flow_run_states/{id}", READ, "flow_run_state_id"),
    scoped("read_flow_run_states", "GET", "/flow_run_states/", "states_of_flow_run"),
    # -- task runs ------------------------------------------------------------------------------
    body("create_task_run", "POST", "/task_runs/", RUN, "flow_run_id", param="flow_run_id"),
    path("read_task_run", "GET", "/task_runs/{id}", READ, "task_run_id"),
    path("read_task_run_with_flow_run_name", "GET", "/ui/task_runs/{id}", READ, "task_run_id"),
    path("update_task_run", "PATCH", "/task_runs/{id}", RUN, "task_run_id"),
    path("delete_task_run", "DELETE", "/task_runs/{id}", DEPLOY, "task_run_id"),
    path("set_task_run_state", "POST", "/task_runs/{id}/set_state", RUN, "task_run_id"),
    path("read_task_run_state", "GET", "/task_run_states/{id}", READ, "task_run_state_id"),
    scoped("read_task_run_states", "GET", "/task_run_states/", "states_of_task_run"),
    scoped("read_task_runs", "POST", "/task_runs/filter", "task_runs"),
    scoped("count_task_runs", "POST", "/task_runs/count", "task_runs"),
    scoped("paginate_task_runs", "POST", "/task_runs/paginate", "task_runs"),
    scoped("task_run_history", "POST", "/task_runs/history", "task_runs"),
    scoped("read_task_run_counts_by_state", "POST", "/ui/task_runs/count", "task_runs"),
    scoped("read_dashboard_task_run_counts", "POST", "/ui/task_runs/dashboard/counts",
           "task_runs"),
    # Background task workers serve task runs outside any flow run: no workflow, so "*".
    anyone("read_task_workers", "POST", "/task_workers/filter"),
    # -- logs, artifacts, events --------------------------------------------------------------
    body("create_logs", "POST", "/logs/", RUN, "logs"),
    scoped("read_logs", "POST", "/logs/filter", "logs"),
    body("create_artifact", "POST", "/artifacts/", RUN, "artifact_create"),
    path("read_artifact", "GET", "/artifacts/{id}", READ, "artifact_id"),
    path("update_artifact", "PATCH", "/artifacts/{id}", RUN, "artifact_id"),
    path("delete_artifact", "DELETE", "/artifacts/{id}", DEPLOY, "artifact_id"),
    scoped("read_latest_artifact", "GET", "/artifacts/{key}/latest", "artifact_key"),
    scoped("read_artifacts", "POST", "/artifacts/filter", "artifacts"),
    scoped("count_artifacts", "POST", "/artifacts/count", "artifacts"),
    scoped("read_latest_artifacts", "POST", "/artifacts/latest/filter", "artifacts"),
    scoped("count_latest_artifacts", "POST", "/artifacts/latest/count", "artifacts"),
    body("create_events", "POST", "/events", RUN, "events"),
    scoped("read_events", "POST", "/events/filter", "events"),
    scoped("read_account_events_page", "GET", "/events/filter/next", "events_page"),
    scoped("count_account_events", "POST", "/events/count-by/{countable}", "events"),
    # -- automations ----------------------------------------------------------------------------
    body("create_automation", "POST", "/automations/", RUN, "automation"),
    path("read_automation", "GET", "/automations/{id}", READ, "automation_id"),
    path("update_automation", "PUT", "/automations/{id}", RUN, "automation_replace",
         body=True),
    path("patch_automation", "PATCH", "/automations/{id}", RUN, "automation_id"),
    path("delete_automation", "DELETE", "/automations/{id}", RUN, "automation_id"),
    # flow.deploy() and serve() clear their deployment's triggers before re-creating them.
    path("delete_automations_owned_by_resource", "DELETE",
         "/automations/owned-by/{resource_id}", DEPLOY, "resource", param="resource_id"),
    path("read_automations_related_to_resource", "GET",
         "/automations/related-to/{resource_id}", READ, "resource", param="resource_id"),
    system("read_automations", "POST", "/automations/filter", READ),
    system("count_automations", "POST", "/automations/count", READ),
    anyone("validate_template", "POST", "/templates/validate"),
    anyone("validate_template_automations", "POST", "/automations/templates/validate"),
    anyone("validate_obj", "POST", "/ui/schemas/validate"),
    # -- blocks: documents may hold secrets; runs load them --------------------------------------
    anyone("read_available_block_capabilities", "GET", "/block_capabilities/"),
    anyone("create_block_type", "POST", "/block_types/", DEPLOY),
    anyone("read_block_types", "POST", "/block_types/filter"),
    anyone("read_block_type_by_slug", "GET", "/block_types/slug/{slug}"),
    anyone("read_block_type_by_id", "GET", "/block_types/{id}"),
    system("update_block_type", "PATCH", "/block_types/{id}", ADMIN),
    system("delete_block_type", "DELETE", "/block_types/{id}", ADMIN),
    system("install_system_block_types", "POST", "/block_types/install_system_block_types",
           ADMIN),
    anyone("read_block_documents_for_block_type", "GET",
           "/block_types/slug/{slug}/block_documents", RUN),
    anyone("read_block_document_by_name_for_block_type", "GET",
           "/block_types/slug/{slug}/block_documents/name/{block_document_name}", RUN),
    anyone("create_block_schema", "POST", "/block_schemas/", DEPLOY),
    anyone("read_block_schemas", "POST", "/block_schemas/filter"),
    anyone("read_block_schema_by_checksum", "GET", "/block_schemas/checksum/{checksum}"),
    anyone("read_block_schema_by_id", "GET", "/block_schemas/{id}"),
    system("delete_block_schema", "DELETE", "/block_schemas/{id}", ADMIN),
    anyone("create_block_document", "POST", "/block_documents/", DEPLOY),
    anyone("read_block_documents", "POST", "/block_documents/filter", RUN),
    anyone("count_block_documents", "POST", "/block_documents/count", RUN),
    anyone("read_block_document_by_id", "GET", "/block_documents/{id}", RUN),
    system("update_block_document_data", "PATCH", "/block_documents/{id}", ADMIN),
    system("delete_block_document", "DELETE", "/block_documents/{id}", ADMIN),
    anyone("read_view_content", "GET", "/collections/views/{view}"),
    # -- concurrency: runs take and release slots; limits are set by admins -----------------------
    system("create_concurrency_limit", "POST", "/concurrency_limits/", ADMIN),
    anyone("read_concurrency_limits", "POST", "/concurrency_limits/filter"),
    anyone("read_concurrency_limit", "GET", "/concurrency_limits/{id}"),
    anyone("read_concurrency_limit_by_tag", "GET", "/concurrency_limits/tag/{tag}"),
    system("delete_concurrency_limit", "DELETE", "/concurrency_limits/{id}", ADMIN),
    system("delete_concurrency_limit_by_tag", "DELETE", "/concurrency_limits/tag/{tag}",
           ADMIN),
    system("reset_concurrency_limit_by_tag", "POST", "/concurrency_limits/tag/{tag}/reset",
           ADMIN),
    anyone("increment_concurrency_limits_v1", "POST", "/concurrency_limits/increment", RUN),
    anyone("decrement_concurrency_limits_v1", "POST", "/concurrency_limits/decrement", RUN),
    system("create_concurrency_limit_v2", "POST", "/v2/concurrency_limits/", ADMIN),
    anyone("read_all_concurrency_limits_v2", "POST", "/v2/concurrency_limits/filter"),
    anyone("read_concurrency_limit_v2", "GET", "/v2/concurrency_limits/{id_or_name}"),
    system("update_concurrency_limit_v2", "PATCH", "/v2/concurrency_limits/{id_or_name}",
           ADMIN),
    system("delete_concurrency_limit_v2", "DELETE", "/v2/concurrency_limits/{id_or_name}",
           ADMIN),
    anyone("bulk_increment_active_slots", "POST", "/v2/concurrency_limits/increment", RUN),
    anyone("bulk_increment_active_slots_with_lease", "POST",
           "/v2/concurrency_limits/increment-with-lease", RUN),
    anyone("bulk_decrement_active_slots", "POST", "/v2/concurrency_limits/decrement", RUN),
    anyone("bulk_decrement_active_slots_with_lease", "POST",
           "/v2/concurrency_limits/decrement-with-lease", RUN),
    anyone("renew_concurrency_lease", "POST", "/v2/concurrency_limits/leases/{lease_id}/renew",
           RUN),
    # -- variables (global; Prefect advises against secrets in them) ------------------------------
    system("create_variable", "POST", "/variables/", ADMIN),
    anyone("read_variables", "POST", "/variables/filter"),
    anyone("count_variables", "POST", "/variables/count"),
    anyone("read_variable", "GET", "/variables/{id}"),
    anyone("read_variable_by_name", "GET", "/variables/name/{name}"),
    system("update_variable", "PATCH", "/variables/{id}", ADMIN),
    system("update_variable_by_name", "PATCH", "/variables/name/{name}", ADMIN),
    system("delete_variable", "DELETE", "/variables/{id}", ADMIN),
    system("delete_variable_by_name", "DELETE", "/variables/name/{name}", ADMIN),
    # -- work pools, queues, workers ------------------------------------------------------------
    system("create_work_pool", "POST", "/work_pools/", ADMIN),
    anyone("read_work_pools", "POST", "/work_pools/filter"),
    anyone("count_work_pools", "POST", "/work_pools/count"),
    anyone("read_work_pool", "GET", "/work_pools/{name}"),
    system("update_work_pool", "PATCH", "/work_pools/{name}", ADMIN),
    system("delete_work_pool", "DELETE", "/work_pools/{name}", ADMIN),
    anyone("read_work_pool_concurrency_status", "POST", "/work_pools/{name}/concurrency_status"),
    # Hands out the pool's scheduled runs: filtered to those the worker may run.
    scoped("get_scheduled_flow_runs", "POST", "/work_pools/{name}/get_scheduled_flow_runs",
           "worker_runs", RUN),
    system("create_work_queue_pool", "POST", "/work_pools/{work_pool_name}/queues", ADMIN),
    anyone("read_work_queues_pool", "POST", "/work_pools/{work_pool_name}/queues/filter"),
    anyone("read_work_queue_pool", "GET", "/work_pools/{work_pool_name}/queues/{name}"),
    system("update_work_queue_pool", "PATCH", "/work_pools/{work_pool_name}/queues/{name}",
           ADMIN),
    system("delete_work_queue_pool", "DELETE", "/work_pools/{work_pool_name}/queues/{name}",
           ADMIN),
    anyone("read_workers", "POST", "/work_pools/{work_pool_name}/workers/filter"),
    anyone("worker_heartbeat", "POST", "/work_pools/{work_pool_name}/workers/heartbeat", RUN),
    system("delete_worker", "DELETE", "/work_pools/{work_pool_name}/workers/{name}", ADMIN),
    system("create_work_queue", "POST", "/work_queues/", ADMIN),
    anyone("read_work_queues", "POST", "/work_queues/filter"),
    anyone("read_work_queue_by_name", "GET", "/work_queues/name/{name}"),
    anyone("read_work_queue", "GET", "/work_queues/{id}"),
    system("update_work_queue", "PATCH", "/work_queues/{id}", ADMIN),
    system("delete_work_queue", "DELETE", "/work_queues/{id}", ADMIN),
    anyone("read_work_queue_concurrency_status", "POST", "/work_queues/{id}/concurrency_status"),
    anyone("read_work_queue_status", "GET", "/work_queues/{id}/status"),
    scoped("read_work_queue_runs", "POST", "/work_queues/{id}/get_runs", "worker_runs", RUN),
    # -- the UI's own objects and state --------------------------------------------------------
    anyone("read_observed_states", "GET", "/observed-states"),
    anyone("create_saved_search", "PUT", "/saved_searches/", RUN),
    anyone("read_saved_searches", "POST", "/saved_searches/filter"),
    anyone("read_saved_search", "GET", "/saved_searches/{id}"),
    system("delete_saved_search", "DELETE", "/saved_searches/{id}", ADMIN),
    # -- websockets (not in OpenAPI; frames are filtered: proxy/prefect/frames.py) ---------------
    # Every flow run and worker streams events here; task-run state travels only here.
    anyone("stream_events_in", "WEBSOCKET", "/events/in", RUN),
    anyone("stream_workspace_events_out", "WEBSOCKET", "/events/out"),
    anyone("stream_logs_out", "WEBSOCKET", "/logs/out"),
    anyone("worker_channel_connect", "WEBSOCKET", "/work_pools/{work_pool_name}/workers/connect",
           RUN),
    system("scheduled_task_subscription", "WEBSOCKET", "/task_runs/subscriptions/scheduled",
           RUN),
)

CATALOG = Catalog(SYSTEM, OPERATIONS)
