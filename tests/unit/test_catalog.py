"""proxy.catalog: every listed route is found, literal segments win, parameters stay in one."""

from __future__ import annotations

import re

import pytest

from proxy.catalog import airflow, prefect
from proxy.catalog.operation import Action, Catalog, Operation, Scope

ALL = [*airflow.CATALOG.operations, *prefect.CATALOG.operations]
CATALOGS = {"airflow": airflow.CATALOG, "prefect": prefect.CATALOG}

# Values shaped like the real ones: an Airflow run id with `+` and `:`, a Prefect UUID.
SAMPLES = {
    "dag_id": "team_a_etl",
    "dag_run_id": "manual__2024-05-01T10:00:00+00:00",
    "id": "0b7a3f8e-2d2c-4f59-9a77-4c1c3e0e9f10",
    "flow_name": "team-a-etl",
    "deployment_name": "nightly",
    # Airflow's integer path parameters match digits only (catalog/operation.py).
    "map_index": "-1",
    "try_number": "2",
    "task_try_number": "3",
    "version_number": "4",
}


def concrete(template: str) -> tuple[str, dict[str, str]]:
    params = {name: SAMPLES.get(name, f"value-of-{name}")
              for name in re.findall(r"{(\w+)}", template)}
    return template.format(**params), params


def test_the_catalogs_are_not_empty_and_names_are_unique() -> None:
    for system, catalog in CATALOGS.items():
        assert catalog.operations
        assert all(op.system == system for op in catalog.operations)
        names = [op.name for op in catalog.operations]
        assert len(names) == len(set(names)), system


@pytest.mark.parametrize("op", ALL, ids=[f"{op.system}.{op.name}" for op in ALL])
def test_every_operation_is_found_for_a_path_made_from_its_template(op: Operation) -> None:
    path, params = concrete(op.template)

    found = CATALOGS[op.system].find(op.method, path)

    assert found is not None
    assert found[0] is op
    assert found[1] == params


@pytest.mark.parametrize("op", ALL, ids=[f"{op.system}.{op.name}" for op in ALL])
def test_a_parameter_never_spans_a_slash(op: Operation) -> None:
    if "{" not in op.template:
        # Nothing to stretch; a longer path is simply unknown.
        path, _ = concrete(op.template)
        assert CATALOGS[op.system].find(op.method, path.rstrip("/") + "/extra/x") is None
        return
    name = re.findall(r"{(\w+)}", op.template)[-1]
    path, _ = concrete(op.template.replace("{" + name + "}", "a/b"))

    found = CATALOGS[op.system].find(op.method, path)

    assert found is None or found[0] is not op, found


def test_a_literal_route_beats_a_parameter_route() -> None:
    found = prefect.CATALOG.find("POST", "/deployments/filter")

    assert found is not None
    assert found[0].name == "read_deployments"
    assert found[0].action is Action.READ
    assert found[0].scope is Scope.LIST
    assert found[1] == {}


@pytest.mark.parametrize(("system", "method", "path", "name"), [
    # Each literal path here is also matched by a parameter route of the same catalog.
    ("airflow", "GET", "/assets/aliases", "get_asset_aliases"),
    ("airflow", "GET", "/assets/events", "get_asset_events"),
    ("airflow", "GET", "/connections/enqueue-test", "get_connection_test"),
    # ... which still takes every other value.
    ("airflow", "GET", "/assets/42", "get_asset"),
    ("airflow", "GET", "/connections/aliases", "get_connection"),
])
def test_literal_routes_of_the_real_catalogs(system: str, method: str, path: str,
                                             name: str) -> None:
    found = CATALOGS[system].find(method, path)

    assert found is not None
    assert found[0].name == name


def test_literal_first_whatever_the_declaration_order() -> None:
    by_id = Operation("prefect", "read_thing", "GET", "/things/{id}", Action.READ, param="id")
    by_id_sub = Operation("prefect", "thing_runs", "GET", "/things/{id}/runs", Action.READ,
                          param="id")
    literal = Operation("prefect", "count_things", "GET", "/things/count", Action.READ,
                        scope=Scope.NONE)
    literal_sub = Operation("prefect", "count_runs", "GET", "/things/count/runs", Action.READ,
                            scope=Scope.NONE)
    catalog = Catalog("prefect", (by_id, by_id_sub, literal, literal_sub))

    assert catalog.find("GET", "/things/count") == (literal, {})
    assert catalog.find("GET", "/things/count/runs") == (literal_sub, {})
    assert catalog.find("GET", "/things/42") == (by_id, {"id": "42"})
    assert catalog.find("GET", "/things/42/runs") == (by_id_sub, {"id": "42"})


def test_a_route_is_classified_by_method_and_path() -> None:
    # Prefect: GET /flows/{id} reads, POST /flows/ creates (the run right, see the catalog).
    read = prefect.CATALOG.find("GET", "/flows/abc")
    create = prefect.CATALOG.find("POST", "/flows/")

    assert read is not None and (read[0].name, read[0].action) == ("read_flow", Action.READ)
    assert create is not None and (create[0].name, create[0].action) == ("create_flow", Action.RUN)


@pytest.mark.parametrize(("system", "method", "path"), [
    ("airflow", "POST", "/dags/team_a_etl"),  # a method the catalog does not list
    ("airflow", "PUT", "/dags/team_a_etl"),
    ("airflow", "get", "/dags/team_a_etl"),  # methods are exact
    ("airflow", "GET", "/dags/team_a_etl/secrets"),  # a route the catalog does not list
    ("airflow", "GET", "/dags/"),  # an empty parameter is no parameter
    ("airflow", "GET", "/dags/team_a_etl/"),
    ("airflow", "GET", "/api/v2/dags"),  # templates are relative to the API root
    ("airflow", "GET", "/x/dags"),  # anchored at the start ...
    ("airflow", "GET", "/dags/team_a_etl/details/x"),  # ... and at the end
    ("airflow", "GET", "/DAGS"),  # case-sensitive
    ("airflow", "WEBSOCKET", "/dags"),
    ("prefect", "POST", "/flows"),  # Prefect's collection route has the slash
    ("prefect", "GET", "/deployments/name/only-flow"),
    ("prefect", "PUT", "/deployments/"),  # a method the server does not route
    ("prefect", "GET", "/events/in"),  # the websocket route is not an HTTP one
    ("prefect", "", ""),
])
def test_unknown_method_or_path_is_none(system: str, method: str, path: str) -> None:
    assert CATALOGS[system].find(method, path) is None


@pytest.mark.parametrize(("path", "expected"), [
    ("/dags/a/b", None),  # would be get_dag with dag_id "a/b" if a parameter spanned "/"
    ("/dags/a/b/dagRuns", None),
    ("/dags/a/dagRuns/x/y", None),
    ("/dags/a/dagRuns/x/wait", "wait_dag_run_until_finished"),
    ("/dags/a/dagRuns/wait", "get_dag_run"),  # a run id may be called "wait"
])
def test_airflow_paths_split_on_slashes(path: str, expected: str | None) -> None:
    found = airflow.CATALOG.find("GET", path)

    assert (found[0].name if found else None) == expected


def test_path_parameters_are_returned_as_given() -> None:
    found = prefect.CATALOG.find("GET", "/deployments/name/my-flow/nightly")

    assert found is not None
    assert found[0].name == "read_deployment_by_name"
    assert found[1] == {"flow_name": "my-flow", "deployment_name": "nightly"}


def scan(catalog: Catalog, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
    """The lookup by definition: every operation of the method, most literal first."""
    for op in sorted((op for op in catalog.operations if op.method == method),
                     key=lambda op: (op.template.count("{"), -len(op.template))):
        params = op.match(method, path)
        if params is not None:
            return op, params
    return None


ODD = Catalog("prefect", (
    Operation("prefect", "by_name", "GET", "/{name}", Action.READ, param="name"),
    Operation("prefect", "by_name_runs", "GET", "/{name}/runs", Action.READ, param="name"),
    Operation("prefect", "things", "GET", "/things", Action.READ, scope=Scope.NONE),
    Operation("prefect", "thing", "GET", "/things/{id}", Action.READ, param="id"),
    Operation("prefect", "made", "POST", "/things", Action.RUN, scope=Scope.NONE),
))


@pytest.mark.parametrize("system", ["airflow", "prefect", "odd"])
def test_the_lookup_by_first_segment_finds_what_a_full_scan_finds(system: str) -> None:
    catalog = CATALOGS.get(system, ODD)
    paths = {"", "/", "//", "/nowhere", "/things", "/things/", "/things/7", "/things/7/runs",
             "/x/runs", "/dags/~", "/flows/filter/extra"}
    for op in catalog.operations:
        path, _ = concrete(op.template)
        paths |= {path, path + "/", path + "/extra", path.rsplit("/", 1)[0]}
    methods = {op.method for op in catalog.operations} | {"HEAD"}
    checked = 0
    for method in methods:
        for path in paths:
            assert catalog.find(method, path) == scan(catalog, method, path), (method, path)
            checked += 1
    assert checked > 20
    # a parameter first: a path no literal starts with still finds it; a literal still wins
    assert ODD.find("GET", "/team-a") == (ODD.operations[0], {"name": "team-a"})
    assert ODD.find("GET", "/team-a/runs") == (ODD.operations[1], {"name": "team-a"})
    assert ODD.find("GET", "/things") == (ODD.operations[2], {})
    # both match; equal in literalness, the one declared first wins, as in a full scan
    assert ODD.find("GET", "/things/runs") == (ODD.operations[1], {"name": "things"})
