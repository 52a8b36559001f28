"""The audit record (schema v0): one JSON object per request, built from its context."""

from __future__ import annotations

import datetime as dt
from typing import Any

from proxy.context import RequestContext

SCHEMA = "orchgate.audit/0"


def record(ctx: RequestContext, event: str = "request") -> dict[str, Any]:
    p = ctx.principal
    d = ctx.decision
    return {
        "schema": SCHEMA,
        "event": event,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "request_id": ctx.request_id,
        "principal": None if p is None else {
            "sub": p.sub, "issuer": p.issuer, "kind": p.kind, "groups": list(p.groups),
            "client_id": p.client_id,
        },
        "client": ctx.client,
        "user_agent": ctx.user_agent,
        "system": ctx.system,
        "method": ctx.method,
        "path": ctx.path,
        "query": ctx.query.decode("latin-1"),
        "operation": ctx.operation.name if ctx.operation else None,
        "workflows": list(ctx.workflows),
        "owners": list(ctx.owners),
        "owner_source": ctx.owner_source,
        "action": ctx.action.label if ctx.action else None,
        "decision": None if d is None else ("allow" if d.allowed else "deny"),
        "rule": d.rule.where if d is not None and d.rule is not None else None,
        "policy_generation": ctx.policy_generation,
        "status": ctx.status,
        "problem": ctx.problem,
        "upstream_status": ctx.upstream_status,
        "latency_ms": ctx.elapsed_ms(),
        "bytes_in": ctx.bytes_in,
        "bytes_out": ctx.bytes_out,
        **({"notes": ctx.notes} if ctx.notes else {}),
    }
