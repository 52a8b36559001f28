"""Airflow 3.3.2 public API (`/api/v2`) — every operation, 128 of them.

Checked against apache-airflow 3.3.2's `/openapi.json` (tests/integration/test_airflow_catalog.py
compares this catalog with the live server's). Operation names are its operationIds; the
route files cited are under airflow/api_fastapi/core_api/routes/public/.

Where the DAG of a request is found:

- the path: `{dag_id}` (`~` = every DAG: a list is filtered item by item, see listing.py);
- the query: `PATCH /dags` (its filters select the DAGs: Scope.QUERY, many="match"); the lists
  `eventLogs`, `dagWarnings`, `backfills`, `dagStats` take a `dag_id(s)` filter but are filtered
  (or narrowed) whatever the caller asked;
- the body: `POST /backfills` (`dag_id`), bulk entities (`dag_id` each, see resolve/airflow.py),
  `clearDagRuns` entities, the batch lists' `dag_ids`;
- a lookup with orchgate's own credential: `backfill_id`, `event_log_id`, `import_error_id`,
  and the `file_token` of `parseDagFile` (its payload names a file, whose DAGs are looked up).

Actions, by group (what a right lets its holder do in Airflow):

- read: every GET on a DAG's own things (the DAG, its runs, task instances, tries, logs, XComs,
  tasks, source, versions, HITL prompts, task state), the batch lists (POST …/list are pure
  reads), favourites (a per-user bookmark; Airflow itself asks for GET on the DAG).
- run: operating a DAG without changing its code: trigger, pause/unpause (PATCH /dags[/id]),
  clear, set run/task states and notes (incl. bulk and dry runs — Airflow authorizes a dry run
  as the write it previews), backfills (they create runs), answering HITL prompts, writing
  XComs and task state (run-time data of that DAG), dropping its queued asset events.
- deploy: what changes or erases what the owner shipped or its history: deleting a DAG, a run
  or a task instance (audit evidence of what ran), and `parseDagFile` (publishes the file's
  current content as the DAG's new version).
- admin: deployment-wide objects no team owns (Scope.SYSTEM, decided on the workflow "*" — the
  action on every DAG — as in the Prefect catalog): connections and variables (credentials;
  their values also need read on `@secrets`: proxy/airflow/redaction.py), pools (scheduling
  capacity shared by every team), config, providers, plugins (installed code and
  infrastructure), jobs (scheduler and triggerer hosts), and asset writes (an asset event or a
  materialization starts DAGs of whichever teams consume or produce the asset). Asset reads are
  read on "*": assets span teams and Airflow gives them no single owner.
- blocked: `GET /auth/login|logout` redirect into the auth manager's login, which hands out
  Airflow sessions; callers get theirs from the identity provider, never from Airflow.
"""

from __future__ import annotations

from proxy.catalog.operation import Action, Catalog, Operation, Scope

SYSTEM = "airflow"

READ, RUN, DEPLOY, ADMIN = Action.READ, Action.RUN, Action.DEPLOY, Action.ADMIN

_RUN = "/dags/{dag_id}/dagRuns/{dag_run_id}"
_TI = _RUN + "/taskInstances/{task_id}"


def _op(name: str, method: str, template: str, action: Action, **kw: object) -> Operation:
    return Operation(SYSTEM, name, method, template, action, **kw)  # type: ignore[arg-type]


def _dag(name: str, method: str, template: str, action: Action, **kw: object) -> Operation:
    """The DAG is the `{dag_id}` path parameter."""
    return _op(name, method, template, action, param="dag_id", **kw)


def _system(name: str, method: str, template: str, action: Action, **kw: object) -> Operation:
    """A deployment-wide object no DAG owns: decided on "*" (the action on every DAG), as in
    the Prefect catalog."""
    return _op(name, method, template, action, scope=Scope.SYSTEM, resolver="system", **kw)


def _lookup(name: str, method: str, template: str, action: Action, param: str) -> Operation:
    """The DAG is found by looking the path's id up at Airflow (resolve/airflow.py)."""
    return _op(name, method, template, action, param=param, resolver=param)


def _list(name: str, template: str, list_key: str, resolver: str = "",
          **kw: object) -> Operation:
    """A read over many DAGs: each item is shown only when its DAG(s) may be read."""
    return _op(name, "GET", template, READ, scope=Scope.LIST, list_key=list_key,
               resolver=resolver, **kw)


CATALOG = Catalog(SYSTEM, (
    # -- monitor.py, version.py: any authenticated caller ------------------------------------
    _op("get_health", "GET", "/monitor/health", READ, scope=Scope.NONE),
    _op("get_version", "GET", "/version", READ, scope=Scope.NONE),
    # -- auth.py: the auth manager's login and logout redirects ------------------------------
    _op("login", "GET", "/auth/login", READ, scope=Scope.NONE,
        blocked="Airflow's login hands out Airflow sessions; through orchgate you use your "
                "identity provider's token"),
    _op("logout", "GET", "/auth/logout", READ, scope=Scope.NONE,
        blocked="there is no Airflow session to end through orchgate"),

    # -- dags.py, dag_tags.py --------------------------------------------------------------
    _list("get_dags", "/dags", "dags"),
    # Pauses or unpauses every DAG its filters match (not only the page it returns):
    # allowed only when the caller may run each of them (airflow/many.py).
    _op("patch_dags", "PATCH", "/dags", RUN, scope=Scope.QUERY, resolver="many",
        many="match"),
    _dag("get_dag", "GET", "/dags/{dag_id}", READ),
    # Airflow 3.3.2's PATCH /dags/{dag_id} changes nothing but `is_paused`: operating it.
    _dag("patch_dag", "PATCH", "/dags/{dag_id}", RUN),
    _dag("delete_dag", "DELETE", "/dags/{dag_id}", DEPLOY),
    _dag("get_dag_details", "GET", "/dags/{dag_id}/details", READ),
    _dag("favorite_dag", "POST", "/dags/{dag_id}/favorite", READ),
    _dag("unfavorite_dag", "POST", "/dags/{dag_id}/unfavorite", READ),
    # Tag names: shown when some DAG the caller may read carries them.
    _list("get_dag_tags", "/dagTags", "tags", resolver="dag_tag"),

    # -- dag_run.py ------------------------------------------------------------------------
    _dag("get_dag_runs", "GET", "/dags/{dag_id}/dagRuns", READ, list_key="dag_runs"),
    _dag("trigger_dag_run", "POST", "/dags/{dag_id}/dagRuns", RUN, inspect_body=True,
         stamp=True),
    # Bulk update/delete: each entity's own `dag_id` overrides the URL's (DESIGN.md §4).
    _dag("bulk_dag_runs", "PATCH", "/dags/{dag_id}/dagRuns", RUN, scope=Scope.BODY,
         resolver="bulk_entities"),
    _dag("get_dag_run", "GET", _RUN, READ),
    _dag("delete_dag_run", "DELETE", _RUN, DEPLOY),
    _dag("patch_dag_run", "PATCH", _RUN, RUN),
    _dag("get_upstream_asset_events", "GET", _RUN + "/upstreamAssetEvents", READ),
    _dag("clear_dag_run", "POST", _RUN + "/clear", RUN),
    # NDJSON, one line per poll interval until the run ends: streamed, never buffered.
    _dag("wait_dag_run_until_finished", "GET", _RUN + "/wait", READ, streaming=True),
    # The path must literally be `~`; `dag_ids` is narrowed to what the caller may read.
    _op("get_list_dag_runs_batch", "POST", "/dags/{dag_id}/dagRuns/list", READ,
        scope=Scope.LIST, param="dag_id", list_key="dag_runs", many="narrow",
        inspect_body=True),
    _dag("clear_dag_runs", "POST", "/dags/{dag_id}/clearDagRuns", RUN, scope=Scope.BODY,
         resolver="clear_entities"),
    _dag("clear_dag_run_partitions", "POST", "/dags/{dag_id}/clearPartitions", RUN),

    # -- dag_sources.py, dag_versions.py, tasks.py, dag_stats.py, dag_warning.py -----------
    _dag("get_dag_source", "GET", "/dagSources/{dag_id}", READ),
    _dag("get_dag_versions", "GET", "/dags/{dag_id}/dagVersions", READ,
         list_key="dag_versions"),
    _dag("get_dag_version", "GET", "/dags/{dag_id}/dagVersions/{version_number}", READ),
    _dag("get_tasks", "GET", "/dags/{dag_id}/tasks", READ),
    _dag("get_task", "GET", "/dags/{dag_id}/tasks/{task_id}", READ),
    _op("get_dag_stats", "GET", "/dagStats", READ, scope=Scope.LIST, list_key="dags",
        many="narrow"),
    _list("list_dag_warnings", "/dagWarnings", "dag_warnings"),

    # -- event_logs.py, import_error.py, backfills.py, dag_parsing.py ----------------------
    _list("get_event_logs", "/eventLogs", "event_logs", resolver="event_log"),
    _lookup("get_event_log", "GET", "/eventLogs/{event_log_id}", READ, "event_log_id"),
    # An import error shows its file's stack trace: only for callers who may read every DAG
    # of that file (Airflow 3.3.2 shows a redacted one when they may read some).
    _list("get_import_errors", "/importErrors", "import_errors", resolver="import_error"),
    _lookup("get_import_error", "GET", "/importErrors/{import_error_id}", READ,
            "import_error_id"),
    _list("list_backfills", "/backfills", "backfills"),
    _op("create_backfill", "POST", "/backfills", RUN, scope=Scope.BODY, param="dag_id"),
    _op("create_backfill_dry_run", "POST", "/backfills/dry_run", RUN, scope=Scope.BODY,
        param="dag_id"),
    _lookup("get_backfill", "GET", "/backfills/{backfill_id}", READ, "backfill_id"),
    _lookup("pause_backfill", "PUT", "/backfills/{backfill_id}/pause", RUN, "backfill_id"),
    _lookup("unpause_backfill", "PUT", "/backfills/{backfill_id}/unpause", RUN, "backfill_id"),
    _lookup("cancel_backfill", "PUT", "/backfills/{backfill_id}/cancel", RUN, "backfill_id"),
    _lookup("reparse_dag_file", "PUT", "/parseDagFile/{file_token}", DEPLOY, "file_token"),

    # -- task_instances.py, log.py, extra_links.py, hitl.py --------------------------------
    _dag("get_task_instances", "GET", _RUN + "/taskInstances", READ,
         list_key="task_instances"),
    _dag("bulk_task_instances", "PATCH", _RUN + "/taskInstances", RUN, scope=Scope.BODY,
         resolver="bulk_entities"),
    _op("get_task_instances_batch", "POST", _RUN + "/taskInstances/list", READ,
        scope=Scope.LIST, param="dag_id", list_key="task_instances", many="narrow",
        inspect_body=True),
    _dag("post_clear_task_instances", "POST", "/dags/{dag_id}/clearTaskInstances", RUN),
    _dag("get_task_instance", "GET", _TI, READ),
    _dag("patch_task_instance", "PATCH", _TI, RUN),
    _dag("delete_task_instance", "DELETE", _TI, DEPLOY),
    _dag("patch_task_instance_dry_run", "PATCH", _TI + "/dry_run", RUN),
    _dag("get_mapped_task_instances", "GET", _TI + "/listMapped", READ),
    _dag("get_task_instance_dependencies", "GET", _TI + "/dependencies", READ),
    _dag("get_task_instance_tries", "GET", _TI + "/tries", READ),
    _dag("get_task_instance_try_details", "GET", _TI + "/tries/{task_try_number}", READ),
    _dag("get_mapped_task_instance", "GET", _TI + "/{map_index}", READ),
    _dag("patch_task_instance_by_map_index", "PATCH", _TI + "/{map_index}", RUN),
    _dag("patch_task_instance_dry_run_by_map_index", "PATCH", _TI + "/{map_index}/dry_run",
         RUN),
    _dag("get_task_instance_dependencies_by_map_index", "GET",
         _TI + "/{map_index}/dependencies", READ),
    _dag("get_mapped_task_instance_tries", "GET", _TI + "/{map_index}/tries", READ),
    _dag("get_mapped_task_instance_try_details", "GET",
         _TI + "/{map_index}/tries/{task_try_number}", READ),
    _dag("patch_task_group_instances", "PATCH", _RUN + "/taskGroupInstances/{group_id}", RUN),
    _dag("patch_task_group_instances_dry_run", "PATCH",
         _RUN + "/taskGroupInstances/{group_id}/dry_run", RUN),
    # Logs are NDJSON when asked for: streamed, never buffered.
    _dag("get_log", "GET", _TI + "/logs/{try_number}", READ, streaming=True),
    _dag("get_external_log_url", "GET", _TI + "/externalLogUrl/{try_number}", READ),
    _dag("get_extra_links", "GET", _TI + "/links", READ),
    _dag("get_hitl_details", "GET", _RUN + "/hitlDetails", READ, list_key="hitl_details"),
    _dag("get_hitl_detail", "GET", _TI + "/{map_index}/hitlDetails", READ),
    _dag("update_hitl_detail", "PATCH", _TI + "/{map_index}/hitlDetails", RUN),
    _dag("get_hitl_detail_try_detail", "GET", _TI + "/{map_index}/hitlDetails/tries/{try_number}",
         READ),

    # -- xcom.py, task_state_store.py: run-time data of one DAG's tasks --------------------
    _dag("get_xcom_entries", "GET", _TI + "/xcomEntries", READ, list_key="xcom_entries"),
    _dag("create_xcom_entry", "POST", _TI + "/xcomEntries", RUN),
    _dag("get_xcom_entry", "GET", _TI + "/xcomEntries/{xcom_key}", READ),
    _dag("update_xcom_entry", "PATCH", _TI + "/xcomEntries/{xcom_key}", RUN),
    _dag("delete_xcom_entry", "DELETE", _TI + "/xcomEntries/{xcom_key}", RUN),
    _dag("list_task_state_store", "GET", _TI + "/state-store", READ),
    _dag("clear_task_state_store", "DELETE", _TI + "/state-store", RUN),
    _dag("get_task_state_store", "GET", _TI + "/state-store/{key}", READ),
    _dag("set_task_state_store", "PUT", _TI + "/state-store/{key}", RUN),
    _dag("patch_task_state_store", "PATCH", _TI + "/state-store/{key}", RUN),
    _dag("delete_task_state_store", "DELETE", _TI + "/state-store/{key}", RUN),

    # -- assets.py, asset_state_store.py ---------------------------------------------------
    _system("get_assets", "GET", "/assets", READ),
    _system("get_asset_aliases", "GET", "/assets/aliases", READ),
    _system("get_asset_alias", "GET", "/assets/aliases/{asset_alias_id}", READ),
    _system("get_asset_events", "GET", "/assets/events", READ),
    _system("create_asset_event", "POST", "/assets/events", ADMIN),
    _system("get_asset", "GET", "/assets/{asset_id}", READ),
    _system("materialize_asset", "POST", "/assets/{asset_id}/materialize", ADMIN),
    _system("get_asset_queued_events", "GET", "/assets/{asset_id}/queuedEvents", READ),
    _system("delete_asset_queued_events", "DELETE", "/assets/{asset_id}/queuedEvents", ADMIN),
    _system("list_asset_state_store", "GET", "/assets/{asset_id}/state-store", READ),
    _system("clear_asset_state_store", "DELETE", "/assets/{asset_id}/state-store", ADMIN),
    _system("get_asset_state_store", "GET", "/assets/{asset_id}/state-store/{key}", READ),
    _system("set_asset_state_store", "PUT", "/assets/{asset_id}/state-store/{key}", ADMIN),
    _system("delete_asset_state_store", "DELETE", "/assets/{asset_id}/state-store/{key}", ADMIN),
    # Queued asset events of one DAG: its own scheduling.
    _dag("get_dag_asset_queued_events", "GET", "/dags/{dag_id}/assets/queuedEvents", READ),
    _dag("delete_dag_asset_queued_events", "DELETE", "/dags/{dag_id}/assets/queuedEvents",
         RUN),
    _dag("get_dag_asset_queued_event", "GET", "/dags/{dag_id}/assets/{asset_id}/queuedEvents",
         READ),
    _dag("delete_dag_asset_queued_event", "DELETE",
         "/dags/{dag_id}/assets/{asset_id}/queuedEvents", RUN),

    # -- connections.py, variables.py: credentials (values also need `@secrets`) ------------
    _system("get_connections", "GET", "/connections", ADMIN,
            redact="connection"),
    _system("post_connection", "POST", "/connections", ADMIN,
            redact="connection", inspect_body=True),
    _system("bulk_connections", "PATCH", "/connections", ADMIN),
    _system("get_connection", "GET", "/connections/{connection_id}", ADMIN,
            redact="connection"),
    _system("patch_connection", "PATCH", "/connections/{connection_id}", ADMIN,
            redact="connection", inspect_body=True),
    _system("delete_connection", "DELETE", "/connections/{connection_id}", ADMIN),
    _system("test_connection", "POST", "/connections/test", ADMIN),
    _system("get_connection_test", "GET", "/connections/enqueue-test", ADMIN),
    _system("enqueue_connection_test", "POST", "/connections/enqueue-test", ADMIN),
    _system("create_default_connections", "POST", "/connections/defaults", ADMIN),
    _system("get_variables", "GET", "/variables", ADMIN, redact="variable"),
    _system("post_variable", "POST", "/variables", ADMIN, redact="variable", inspect_body=True),
    _system("bulk_variables", "PATCH", "/variables", ADMIN),
    _system("get_variable", "GET", "/variables/{variable_key}", ADMIN,
            redact="variable"),
    _system("patch_variable", "PATCH", "/variables/{variable_key}", ADMIN,
            redact="variable", inspect_body=True),
    _system("delete_variable", "DELETE", "/variables/{variable_key}", ADMIN),

    # -- pools.py, config.py, providers.py, plugins.py, job.py: the platform ---------------
    _system("get_pools", "GET", "/pools", ADMIN),
    _system("post_pool", "POST", "/pools", ADMIN),
    _system("bulk_pools", "PATCH", "/pools", ADMIN),
    _system("get_pool", "GET", "/pools/{pool_name}", ADMIN),
    _system("patch_pool", "PATCH", "/pools/{pool_name}", ADMIN),
    _system("delete_pool", "DELETE", "/pools/{pool_name}", ADMIN),
    _system("get_config", "GET", "/config", ADMIN),
    _system("get_config_value", "GET", "/config/section/{section}/option/{option}", ADMIN),
    _system("get_providers", "GET", "/providers", ADMIN),
    _system("get_plugins", "GET", "/plugins", ADMIN),
    _system("import_errors", "GET", "/plugins/importErrors", ADMIN),
    _system("get_jobs", "GET", "/jobs", ADMIN),
), blocked=(
    # Everything beside /api/v2 on the API server (airflow/api_fastapi/app.py, DESIGN.md §4).
    ("/ui/", "Airflow's UI API is internal to its web UI (POST /ui/auth/token hands out "
             "Airflow tokens); it is not served through orchgate"),
    ("/auth/", "Airflow's auth manager login is not served through orchgate; use your "
               "identity provider's token"),
    ("/execution/", "the Task Execution API is for Airflow's own workers, which reach Airflow "
                    "directly, never through orchgate"),
    ("/docs", "Airflow's API documentation is not served through orchgate"),
    ("/redoc", "Airflow's API documentation is not served through orchgate"),
    ("/openapi.json", "Airflow's API description is not served through orchgate"),
    ("/api/v1/", "Airflow 3 has no /api/v1; use /api/v2"),
    ("/", "only Airflow's public API under /api/v2/ is served through orchgate (plugin "
          "mounts and other apps are not)"),
))
