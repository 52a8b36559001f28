"""Secret values in Airflow responses, hidden from callers without the secrets right.

Connections and variables are admin objects (catalog/airflow.py); their values are a separate
right: read on the workflow `@secrets`, which no DAG id can spell (DAG ids are
`[A-Za-z0-9_.-]`). A policy grants it like any other right (`p, group:vault, airflow, @secrets,
read, allow`), rules on `*` include it, and a deny row takes it away from an admin
(`p, group:platform-admins, airflow, @secrets, read, deny`) — the Casbin model is unchanged.

Airflow 3.3.2 itself masks only what its secrets masker thinks sensitive (a connection's
`password`, `extra` keys like "password", variables whose key looks secret:
core_api/datamodels/connections.py, variables.py). Without the right, orchgate masks every
`password`, the whole `extra` and every variable `value`, keeping the schema (strings stay
strings: apache-airflow-client validates them). These responses are small JSON objects, so
they are read whole; nothing of them is ever logged or audited.
"""

from __future__ import annotations

from typing import Any

from proxy.context import RequestContext
from proxy.listing import send_json
from proxy.upstream.forward import Headers, Upstream

SECRETS = "@secrets"
MASK = "***"


def redact(kind: str, data: Any) -> Any:
    """`data` with the secret values of `kind` ("connection" | "variable") masked."""
    if isinstance(data, dict) and isinstance(data.get(kind + "s"), list):  # a collection
        return {**data, kind + "s": [_redact_one(kind, item) for item in data[kind + "s"]]}
    return _redact_one(kind, data)


def _redact_one(kind: str, item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    fields = ("password", "extra") if kind == "connection" else ("value",)
    return {k: (MASK if k in fields and v not in (None, "") else v) for k, v in item.items()}


async def forward_redacted(ctx: RequestContext, upstream: Upstream, kind: str, path_qs: bytes,
                           headers: Headers, body: bytes | None, send: Any) -> None:
    """Forward, then answer the upstream's JSON with secret values masked."""
    status, data = await upstream.get_json(path_qs, headers, ctx.method, body)
    ctx.upstream_status = status
    if data is None:  # 204 No Content and the like
        ctx.status = status
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"x-request-id", ctx.request_id.encode())]})
        await send({"type": "http.response.body", "body": b""})
        return
    ctx.notes["redacted"] = kind
    await send_json(ctx, status, redact(kind, data) if 200 <= status < 300 else data, send)

