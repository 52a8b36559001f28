"""Requests over many Airflow DAGs that are decided before they are sent (Operation.many).

- "narrow": the batch lists (`POST /dags/~/dagRuns/list`, `…/taskInstances/list`, body
  `dag_ids`) and `GET /dagStats` (query `dag_ids`) filter with an exact `IN`, so their
  `dag_ids` become what the caller may read ∩ what it asked (all it may read when it asked for
  none). Airflow then pages and counts exactly what the caller may see; nothing to filter
  afterwards. When nothing is left, orchgate answers the empty collection itself: an empty
  `dag_ids` means "no filter" to Airflow.
- "match": `PATCH /dags` pauses or unpauses every DAG its filters match (`dag_id_pattern`
  LIKE with `%`, `_`, `|`, `~`; tags; owners; …), not only the page it answers. The same
  filters are listed first with orchgate's credential; the request goes on only when the
  caller holds the right on every matched DAG, otherwise 403 saying how many were not (never
  which: the caller did not name them). A DAG that appears between the check and the PATCH
  is not covered; DAG files come from deployers, so that window is theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

import orjson

from proxy.catalog.operation import Action, Operation
from proxy.context import RequestContext
from proxy.errors import Reject, bad_request
from proxy.resolve.airflow import AirflowLookups

# The filters `PATCH /dags` applies (airflow/api_fastapi/core_api/routes/public/dags.py
# `patch_dags`): the listing must use exactly these, or it would match another set.
PATCH_DAGS_FILTERS = frozenset({"dag_id_pattern", "dag_id_prefix_pattern", "tags",
                                "tags_match_mode", "owners", "exclude_stale", "paused"})

Decide = Callable[[str, Action], bool]


async def matched(ctx: RequestContext, lookups: AirflowLookups, decide: Decide) -> None:
    """Every DAG the query of `PATCH /dags` matches must be allowed; sets ctx.workflows."""
    assert ctx.action is not None
    query = [(k, v) for k, v in parse_qsl(ctx.query.decode("latin-1"), keep_blank_values=True)
             if k in PATCH_DAGS_FILTERS]
    dags = await lookups.dags_matching(query)
    ctx.workflows = dags
    denied = [d for d in dags if not decide(d, ctx.action)]
    if denied:
        ctx.notes["denied_dags"] = len(denied)
        raise Reject(403, "forbidden", "Forbidden",
                     f"{ctx.action.label} is not granted to you on {len(denied)} of the "
                     f"{len(dags)} DAGs this request matches; nothing was changed")


async def narrow(ctx: RequestContext, op: Operation, lookups: AirflowLookups,
                 can_read: Callable[[str], bool]) -> bool:
    """Rewrite the request's `dag_ids` (ctx.json/ctx.body or ctx.query) to what the caller
    may read; False when nothing is left (answer the empty collection)."""
    if op.method == "GET":
        params = parse_qsl(ctx.query.decode("latin-1"), keep_blank_values=True)
        asked = [v for k, v in params if k == "dag_ids"]
    else:
        if ctx.json is not None and not isinstance(ctx.json, dict):
            raise bad_request("the body must be a JSON object")
        body = dict(ctx.json or {})
        asked_field = body.get("dag_ids")
        if asked_field is not None and (not isinstance(asked_field, list) or not all(
                isinstance(d, str) for d in asked_field)):
            raise bad_request("dag_ids must be a list of DAG ids")
        asked = list(asked_field or [])
    candidates = asked or list((await lookups.index()).dag_ids)
    allowed = list(dict.fromkeys(d for d in candidates if can_read(d)))
    ctx.workflows = tuple(allowed)[:100]  # the audit record names at most 100
    ctx.notes["narrowed"] = {"asked": len(asked) or None, "allowed": len(allowed)}
    if not allowed:
        return False
    if op.method == "GET":
        ctx.notes["caller_query"] = ctx.query.decode("latin-1")
        ctx.query = urlencode([*((k, v) for k, v in params if k != "dag_ids"),
                               *(("dag_ids", d) for d in allowed)]).encode()
    else:
        ctx.json = {**body, "dag_ids": allowed}
        ctx.body = orjson.dumps(ctx.json)
    return True


def empty_collection(op: Operation) -> dict[str, object]:
    return {op.list_key: [], "total_entries": 0}
