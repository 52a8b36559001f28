"""The audit record (schema v1, docs/audit.md): built here, and only here, from the context.

`record(ctx)` is the one record every request gets, whatever happened (denials, 401s and
errors included); `record(ctx, "intent")` is the write-ahead record of a run, deploy or admin
call, made durable before it is forwarded. The sink adds the chain fields (seq, prev, hash).
A request answered in full has its record built by the sink, with the others waiting for their
write (audit/sinks.py): its time and latency are those noted when the answer went
(`RequestContext.answer`).
"""

from __future__ import annotations

import datetime as dt
import time
import zlib
from typing import Any

import orjson

from proxy.audit.chain import SCHEMA
from proxy.audit.logging import scrub
from proxy.catalog.operation import Action
from proxy.context import RequestContext

# Operations that create something whose id the auditor wants: the id fields of the response.
CREATED: dict[str, tuple[str, ...]] = {
    "trigger_dag_run": ("dag_id", "dag_run_id"),
    "create_backfill": ("id",),
    "create_flow_run": ("id",),
    "create_flow_run_from_deployment": ("id",),
    "bulk_create_flow_runs_from_deployment": ("id",),
    "create_deployment": ("id",),
}
CAPTURE_LIMIT = 256 * 1024  # response bytes kept to find the created ids
_CREATED_NAMES = {"trigger_dag_run": "dag_run", "create_backfill": "backfill",
                  "create_deployment": "deployment"}


_clock: tuple[int, str] = (-1, "")  # the last millisecond formatted
_second: tuple[int, str] = (-1, "")  # the last second formatted, without its fraction
_LABELS = {action: action.label for action in Action}  # an enum's name is slow to read


def _now(ns: int) -> str:
    """The time `ns` (time.time_ns()) in UTC, to the millisecond, as
    `datetime.isoformat(timespec="milliseconds")` writes it: the date and time formatted once
    per second, the milliseconds once per millisecond (a busy proxy records several requests
    in each; records written together span a few)."""
    global _clock, _second
    ms = ns // 1_000_000
    if ms != _clock[0]:
        second, fraction = divmod(ms, 1000)
        if second != _second[0]:
            _second = (second, dt.datetime.fromtimestamp(second, dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%S"))
        _clock = (ms, f"{_second[1]}.{fraction:03d}+00:00")
    return _clock[1]


class AuditRecord(dict[str, Any]):
    """A record built by `record`: its key names are the schema's, and the notes are scrubbed
    here, so the sink looks only for credential-shaped values in its line (audit/sinks.py;
    tests/unit/test_audit_redaction.py holds the schema's names to that).

    `presorted`: its keys, and those of every mapping in it, were inserted in sorted order, so
    its plain serialization is already the canonical one (audit/chain.py) and sealing skips
    the sort (set by `record`; not set: not known to be)."""

    __slots__ = ("presorted",)
    presorted: bool


# What only the outcome record has: the write-ahead ("intent") record is written before any of it
# is known.
_OUTCOME_ONLY = frozenset({"bytes_in", "bytes_out", "created", "intent_seq", "latency_ms",
                           "problem", "status", "upstream_status"})


def record(ctx: RequestContext, event: str = "request") -> AuditRecord:
    """The outcome record of a request (`event` "request"), or its write-ahead record
    ("intent"). Keys are inserted in sorted order, the chain's `prev` and `seq` in their places
    (filled in when sealed; `hash` goes last, after the canonical form)."""
    p = ctx.principal
    d = ctx.decision
    notes = ctx.notes
    at, latency = (ctx.answered if ctx.answered is not None and event == "request"
                   else (time.time_ns(), ctx.elapsed_ms()))
    made = created(ctx) if ctx.capture is not None else None
    shadow = notes.get("shadow")
    ms = at // 1_000_000
    out = AuditRecord({
        "action": None if ctx.action is None else _LABELS[ctx.action],
        "bytes_in": ctx.bytes_in,
        "bytes_out": ctx.bytes_out,
        "client": ctx.client,
        "created": made,
        "decision": None if d is None else ("allow" if d.allowed else "deny"),
        "event": event,
        "intent_seq": ctx.intent_seq,
        "latency_ms": latency,
        "method": ctx.method,
        "operation": ctx.operation.name if ctx.operation else None,
        "owner_source": ctx.owner_source,
        "owners": ctx.owners,
        "parent": ctx.parent,
        "path": ctx.path,
        "policy_generation": ctx.policy_generation,
        "policy_hash": notes.get("policy_digest"),
        "prev": None,
        "principal": None if p is None else p.audited,
        "problem": ctx.problem,
        "query": ctx.query.decode("latin-1"),
        "reason": None if d is None or d.allowed else d.reason,
        "request_id": ctx.request_id,
        "rule": d.rule.where if d is not None and d.rule is not None else None,
        "schema": SCHEMA,
        "seq": None,
        "shadow": shadow,
        "status": ctx.status,
        "system": ctx.system,
        "time": _clock[1] if ms == _clock[0] else _now(at),
        "upstream_status": ctx.upstream_status,
        "user_agent": ctx.user_agent,
        "workflows": ctx.workflows,
    })
    if event == "intent":
        out = AuditRecord({k: v for k, v in out.items() if k not in _OUTCOME_ONLY})
    # Other notes, scrubbed here (the sink does not walk an AuditRecord's keys).
    elif len(notes) > ("policy_digest" in notes) + ("shadow" in notes):
        out["notes"] = scrub({k: v for k, v in notes.items()
                              if k not in ("shadow", "policy_digest")})
        out.presorted = False
        return out
    # Mappings from outside (lineage, created ids, notes, a shadow decision) keep their own
    # order: such a record is sorted when it is sealed.
    out.presorted = made is None and ctx.parent is None and shadow is None
    return out


def created(ctx: RequestContext) -> dict[str, Any] | None:
    """The ids the upstream answered a creation with (a DAG run, flow runs, a deployment)."""
    if (ctx.operation is None or ctx.capture is None or ctx.upstream_status is None
            or not 200 <= ctx.upstream_status < 300):
        return None
    fields = CREATED.get(ctx.operation.name)
    if fields is None:
        return None
    data = bytes(ctx.capture)
    if data[:2] == b"\x1f\x8b":  # forwarded as the upstream sent it: gzip (Airflow's GZip)
        try:
            data = zlib.decompressobj(wbits=31).decompress(data, CAPTURE_LIMIT * 4)
        except zlib.error:
            return None
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    items = body if isinstance(body, list) else [body]
    name = _CREATED_NAMES.get(ctx.operation.name, "flow_run")
    found = []
    for item in items:
        if isinstance(item, dict) and all(isinstance(item.get(f), str) for f in fields):
            found.append({"system": ctx.system, "kind": name,
                          "id": "/".join(item[f] for f in fields)})
    return {"runs": found} if found else None
