"""Regenerate upstream_routes.json: the upstreams' own route tables, in registration order.

The property tests (test_routing_properties.py) and the fuzz harness (tests/fuzz/) model how
Airflow and Prefect route a request with these tables and Starlette's own path compiler, the
router both upstreams are built on. Not a test; run it with each upstream's interpreter after
an upgrade of the pinned versions:

    .venvs/airflow/bin/python tests/security/dump_routes.py airflow > /tmp/airflow.json
    .venvs/prefect/bin/python tests/security/dump_routes.py prefect > /tmp/prefect.json
    .venv/bin/python tests/security/dump_routes.py merge /tmp/airflow.json /tmp/prefect.json

Airflow's public API is relative to `/api/v2` (its `public_router`), Prefect's to `/api`
(`create_api_app()`, mounted there by the server).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("upstream_routes.json")


def _walk(routes: Any, prefix: str, out: list[list[str]]) -> None:
    for route in routes:
        if not hasattr(route, "path"):  # FastAPI's lazily included routers
            inner = getattr(route, "router", None) or getattr(route, "original_router", None)
            if inner is not None:
                _walk(inner.routes, prefix + (getattr(route, "prefix", "") or ""), out)
            continue
        path = prefix + route.path
        if type(route).__name__.endswith("WebSocketRoute"):
            out.append(["WEBSOCKET", path])
        for method in sorted(getattr(route, "methods", None) or ()):
            out.append([method, path])


def dump(system: str) -> list[list[str]]:
    out: list[list[str]] = []
    if system == "airflow":
        from airflow.api_fastapi.core_api.routes.public import (  # type: ignore[import-not-found]
            public_router,
        )

        _walk(public_router.routes, "", out)
        return [[m, p.removeprefix("/api/v2") or "/"] for m, p in out]
    from prefect.server.api.server import (  # type: ignore[import-not-found, unused-ignore]
        create_api_app,
    )

    _walk(create_api_app().routes, "", out)
    return out


def main(argv: list[str]) -> None:
    if argv[0] == "merge":
        airflow, prefect = (json.loads(Path(p).read_text(encoding="utf-8")) for p in argv[1:3])
        data = {"_source": __doc__.splitlines()[0] if __doc__ else "",
                "airflow": airflow, "prefect": prefect}
        OUT.write_text(json.dumps(data, indent=0) + "\n", encoding="utf-8")
        return
    print(json.dumps(dump(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
