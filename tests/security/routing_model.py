"""A model of how the upstreams route a request, for property tests and the fuzz harness.

Airflow 3.3.2 and Prefect 3.9.1 are FastAPI apps on Starlette 1.10: uvicorn percent-decodes
the request-target into `scope["path"]`, and the router takes the first route, in
registration order, whose compiled path regex matches and whose methods include the request's.
The tables come from the upstreams themselves (upstream_routes.json, see dump_routes.py) and
are compiled with Starlette's own `compile_path`, convertors (`:path`, `:uuid`) included.

`proxy_view` is orchgate's side, built from its own functions: the edge's canonical path, the
prefix routing and the catalog match.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import quote, unquote

from starlette.routing import compile_path

from proxy.catalog import airflow, prefect
from proxy.catalog.operation import Catalog, Operation
from proxy.edge import canonical_path
from proxy.errors import Reject

ROUTES_FILE = Path(__file__).with_name("upstream_routes.json")
CATALOGS: dict[str, Catalog] = {"airflow": airflow.CATALOG, "prefect": prefect.CATALOG}
PREFIXES = {"airflow": "/airflow", "prefect": "/prefect"}  # the harness's and the demo's
API_ROOTS = {"airflow": "/api/v2", "prefect": "/api"}


@dataclass(frozen=True, slots=True)
class UpstreamRoute:
    method: str
    path: str  # as registered, convertors included: "/pools/{pool_name:path}"
    template: str  # convertors removed: "/pools/{pool_name}", comparable with the catalog's
    regex: re.Pattern[str]


@cache
def upstream_routes(system: str) -> tuple[UpstreamRoute, ...]:
    rows = json.loads(ROUTES_FILE.read_text(encoding="utf-8"))[system]
    out = []
    for method, path in rows:
        regex, template, _ = compile_path(path)
        out.append(UpstreamRoute(method, path, template, regex))
    return tuple(out)


def upstream_route(system: str, method: str, decoded_path: str
                   ) -> tuple[UpstreamRoute, dict[str, str]] | None:
    """The route the upstream runs for (method, path relative to its API root), if any."""
    for route in upstream_routes(system):
        if route.method == method:
            match = route.regex.match(decoded_path)
            if match:
                return route, match.groupdict()
    return None


def upstream_decode(raw_path: bytes) -> str:
    """What uvicorn puts in `scope["path"]` for a raw request-target path."""
    return unquote(raw_path.decode("ascii"))


@dataclass(frozen=True, slots=True)
class ProxyView:
    system: str
    api_path: str  # decoded, relative to the API root: what the catalog matched
    forwarded: bytes  # the raw path orchgate sends upstream (relative to the upstream URL)
    operation: Operation | None
    params: dict[str, str]


def proxy_view(raw_path: bytes, method: str) -> ProxyView | None:
    """orchgate's reading of a request path: None when the edge or the prefix routing refuses
    it (nothing is forwarded then)."""
    try:
        path = canonical_path(raw_path)
    except Reject:
        return None
    for system, prefix in PREFIXES.items():
        if path.startswith(prefix + "/"):
            rest = path[len(prefix):]
            root = API_ROOTS[system]
            if not rest.startswith(root + "/"):
                return None
            # The forwarded path: the raw bytes after the literal prefix (pipeline.upstream_path
            # refuses a raw path that does not start with it).
            if not raw_path.startswith(prefix.encode() + b"/"):
                return None
            found = CATALOGS[system].find(method, rest[len(root):])
            op, params = found if found is not None else (None, {})
            return ProxyView(system, rest[len(root):], raw_path[len(prefix):], op, params)
    return None


# -- the properties (asserted by the hypothesis tests and the fuzz harness) ----------------


def check_one_meaning(raw: bytes, method: str) -> None:
    """A request orchgate accepts under an operation runs that operation upstream, or none."""
    view = proxy_view(raw, method)
    if view is None or view.operation is None:
        return  # refused by the edge, the prefix routing or the catalog: nothing forwarded
    decoded = upstream_decode(view.forwarded)
    root = API_ROOTS[view.system]
    # What the upstream decodes is what orchgate authorized.
    assert decoded == root + view.api_path, (raw, decoded, view.api_path)
    routed = upstream_route(view.system, method, view.api_path)
    if routed is None:
        return  # the upstream has no such route: 404/405, no other operation runs
    route, params = routed
    op = view.operation
    assert (route.template, route.method) == (op.template, op.method), \
        f"{method} {raw!r}: orchgate decided {op.name} ({op.template}), " \
        f"the upstream runs {route.method} {route.path}"
    assert params == view.params, (raw, params, view.params)


def check_canonical(raw: bytes, _method: str = "GET") -> None:
    """The canonical path is idempotent, is what the upstream decodes, and is clean."""
    try:
        path = canonical_path(raw)
    except Reject as reject:
        refused = reject.status
    else:
        refused = 0
    if refused:
        assert refused == 400
        return
    # Idempotent: the canonical form, re-encoded, reads back as itself.
    assert canonical_path(quote(path, safe="/").encode("ascii")) == path
    assert canonical_path(quote(path, safe="/~").encode("ascii")) == path
    # And it is what the upstream's server decodes from the raw bytes.
    if raw.isascii():
        assert upstream_decode(raw) == path
    # It has no dot segment, no empty inner segment, no separator or escape left in it.
    segments = path.split("/")[1:]
    assert all(s not in (".", "..") for s in segments)
    assert all(s for s in segments[:-1])
    assert not any(c in path for c in "\\%;#")
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)
