"""The Airflow catalog against the live 3.3.2 API server: every operation known, nothing extra."""

from __future__ import annotations

import re

from devstack import LocalStack
from procs import http

from proxy.catalog.airflow import CATALOG
from proxy.catalog.operation import INTEGER_PARAMS

API_ROOT = "/api/v2"
METHODS = {"get", "put", "post", "patch", "delete"}


def _live_operations(stack: LocalStack) -> set[tuple[str, str, str]]:
    status, spec = http("GET", stack.airflow.url + "/openapi.json", timeout=30)
    assert status == 200, spec
    ops = set()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                ops.add((method.upper(), path, operation["operationId"]))
    return ops


def test_the_catalog_is_exactly_the_live_public_api(stack: LocalStack) -> None:
    live = _live_operations(stack)
    public = {(m, p.removeprefix(API_ROOT), name) for m, p, name in live
              if p.startswith(API_ROOT + "/")}
    mine = {(op.method, op.template, op.name) for op in CATALOG.operations}

    assert live == {(m, API_ROOT + p, n) for m, p, n in public}, "operations outside /api/v2"
    assert len(public) == 128
    assert sorted(public - mine) == [], "operations of the server missing from the catalog"
    assert sorted(mine - public) == [], "catalog operations the server does not have"


def test_every_live_path_finds_its_own_operation(stack: LocalStack) -> None:
    # The router's precedence (literal segments first) must pick the operation the server
    # would run, for every template filled with a value of its own.
    for method, path, name in _live_operations(stack):
        # Integer parameters get a number (Airflow declares them int; catalog/operation.py).
        concrete = re.sub(
            r"{(\w+)}", lambda m: "7" if m.group(1) in INTEGER_PARAMS else f"x{m.group(1)}",
            path.removeprefix(API_ROOT))
        found = CATALOG.find(method, concrete)
        assert found is not None, (method, path)
        assert found[0].name == name, (method, path, found[0].name)
