"""The Prefect catalog against the live 3.9.1 server: every route known, nothing extra."""

from __future__ import annotations

import re
import subprocess

from devstack import LocalStack
from upstreams import PREFECT_VENV

from proxy.catalog.prefect import CATALOG

# The websockets are not in OpenAPI: they are read from the server's own router.
ROUTES_SCRIPT = """
from fastapi.routing import APIWebSocketRoute
from prefect.server.api.server import create_api_app
def walk(routes):
    for r in routes:
        if type(r).__name__ == "_IncludedRouter":
            for sub in walk(r.original_router.routes):
                yield (getattr(r.include_context, "prefix", "") or "") + sub
        elif isinstance(r, APIWebSocketRoute):
            yield r.path
for path in walk(create_api_app().routes):
    print(path)
"""


def _template(path: str) -> str:
    return re.sub(r"{(\w+):\w+}", r"{\1}", path)


def test_every_http_operation_of_the_live_server_is_in_the_catalog(stack: LocalStack) -> None:
    status, spec = stack.prefect.request("GET", "/openapi.json")
    assert status == 200
    live = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    mine = {(op.method, op.template) for op in CATALOG.operations if op.method != "WEBSOCKET"}

    assert len(live) == 188
    assert sorted(live - mine) == [], "routes of the server missing from the catalog"
    assert sorted(mine - live) == [], "catalog routes the server does not have"


def test_every_websocket_route_of_the_server_is_in_the_catalog(stack: LocalStack,
                                                               tmp_path: object) -> None:
    done = subprocess.run([str(PREFECT_VENV / "bin/python"), "-c", ROUTES_SCRIPT],
                          env={**stack.prefect.client_env(), "PREFECT_HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=120, check=True)
    live = {_template(p) for p in done.stdout.split()}
    mine = {op.template for op in CATALOG.operations if op.method == "WEBSOCKET"}

    assert live == mine == {"/events/in", "/events/out", "/logs/out",
                            "/task_runs/subscriptions/scheduled",
                            "/work_pools/{work_pool_name}/workers/connect"}
