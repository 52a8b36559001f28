"""Prefect reads over many workflows: the caller's scope injected, the answer checked again.

For `*/filter`, `*/count`, `*/paginate`, `*/history`, the UI reads, logs and events
(catalog scope LIST; `Operation.resolver` names the kind), the request body gets the ids the
caller may see (proxy/prefect/visible.py) ANDed in, so counts, pages and page counts are
computed by Prefect over exactly what the caller may see. Item responses are then filtered
again (a safety net for objects created since the inventory was read). Bulk writes (`DEPLOY`
or `RUN` kinds) are narrowed the same way to what the caller may change.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from proxy.authorize import Authorizer
from proxy.catalog.operation import Action
from proxy.context import RequestContext
from proxy.errors import Reject, bad_request, not_found
from proxy.listing import send_json
from proxy.ownership import OwnerTags
from proxy.prefect.visible import Inventories, Visible, visible
from proxy.resolve.prefect import PrefectResolver, event_workflow
from proxy.upstream.forward import Headers, Upstream

MAX_LOG_RUNS = 1000  # flow runs named in one injected log filter
Send = Any


class ScopedReads:
    def __init__(self, resolver: PrefectResolver, authorizer: Authorizer) -> None:
        self._resolver = resolver
        self._lookups = resolver.lookups
        self._authorizer = authorizer
        self.inventories = Inventories(resolver.lookups)

    def decider(self, ctx: RequestContext, action: Action) -> Callable[..., bool]:
        """decide(workflow, deployment_tags=()) for this caller and action."""
        snapshot = self._authorizer.policy.current
        assert ctx.principal is not None
        subjects = ctx.principal.subjects
        tags = self._authorizer.tags
        use_tags = tags is not None and tags.enabled("prefect")

        def decide(workflow: str, deployment_tags: tuple[str, ...] = ()) -> bool:
            owners = OwnerTags.teams(deployment_tags) if use_tags else ()
            return snapshot.decide(subjects, "prefect", workflow, action, owners).allowed
        return decide

    async def forward(self, ctx: RequestContext, upstream: Upstream, path_qs: bytes,
                      headers: Headers, send: Send) -> None:
        assert ctx.operation is not None and ctx.action is not None
        kind = ctx.operation.resolver
        decide = self.decider(ctx, ctx.action)
        everything = decide("*", ())
        scope = visible(await self.inventories.get(), decide, everything)
        body = ctx.json if ctx.json is not None else ({} if ctx.method != "GET" else None)
        if body is not None and not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        path, _, query = path_qs.partition(b"?")
        if not everything:
            body, query = await self._inject(kind, scope, decide, body, query)
        ctx.notes["scope"] = {"kind": kind, "everything": everything,
                              "deployments": len(scope.deployments), "flows": len(scope.flows)}
        status, data = await upstream.get_json(
            path + (b"?" + query if query else b""), headers, ctx.method,
            None if body is None else orjson.dumps(body), retry=ctx.operation.idempotent)
        ctx.upstream_status = status
        if status == 200 and not everything:
            data = await self._safety_net(ctx, kind, scope, decide, data)
        if kind == "artifact_key" and data is None:
            raise not_found("no artifact with this key that you may read")
        await send_json(ctx, status, data, send)

    # -- the request ----------------------------------------------------------------------------

    async def _inject(self, kind: str, scope: Visible, decide: Callable[..., bool],
                      body: dict[str, Any] | None, query: bytes
                      ) -> tuple[dict[str, Any] | None, bytes]:
        flows, deployments = sorted(scope.flows), sorted(scope.deployments)
        match kind:
            case "flows":
                constrain(body, "flows", "id", flows)
            case "deployments":
                constrain(body, "deployments", "id", deployments)
            case "flow_runs" | "task_runs" | "artifacts":
                constrain(body, "flows", "id", flows)
                if scope.partial:
                    constrain_deployment(body, deployments, adhoc=True)
            case "flow_runs_bulk":  # bulk writes: runs of deployments only, never ad-hoc ones
                constrain_deployment(body, deployments, adhoc=False)
            case "flow_ids":
                narrow_list(body, "flow_ids", scope.flows)
            case "deployment_ids":
                narrow_list(body, "deployment_ids", scope.deployments)
            case "flow_run_ids":
                assert body is not None
                ids = body.get("flow_run_ids") or []
                if not isinstance(ids, list):
                    raise bad_request("flow_run_ids must be a list")
                body["flow_run_ids"] = [i for i in ids if decide(await self._lookups.flow_run(i))]
            case "logs":
                await self._inject_logs(body, scope, decide)
            case "events":
                scope_events(body, "filter", scope)
            case "events_page":
                query = scope_page_token(query, scope)
            case "states_of_flow_run" | "states_of_task_run":
                params = dict(parse_qsl(query.decode("latin-1")))
                which = "flow" if kind == "states_of_flow_run" else "task"
                run_id = params.get(f"{which}_run_id")
                workflow = await (self._lookups.flow_run(run_id) if which == "flow"
                                  else self._lookups.task_run(run_id))
                if not decide(workflow):
                    raise Reject(403, "forbidden", "Forbidden",
                                 f"read on prefect workflow {workflow!r}: not granted")
            case "worker_runs" | "artifact_key":
                pass  # filtered on the way back
            case other:
                raise AssertionError(f"unknown scoped read {other!r}")
        return body, query

    async def _inject_logs(self, body: dict[str, Any] | None, scope: Visible,
                           decide: Callable[..., bool]) -> None:
        assert body is not None
        logs = _object(body, "logs")
        run_filter = _object(logs, "flow_run_id")
        named = run_filter.get("any_")
        if named is not None:
            if not isinstance(named, list) or len(named) > MAX_LOG_RUNS:
                raise bad_request(f"logs.flow_run_id.any_ must list at most {MAX_LOG_RUNS} ids")
            allowed = [r for r in named if decide(await self._lookups.flow_run(r))]
        else:
            allowed = await self._visible_runs(scope)
        logs["flow_run_id"] = {**run_filter, "any_": allowed}
        body["logs"] = logs

    async def _visible_runs(self, scope: Visible) -> list[str]:
        query: dict[str, Any] = {"limit": 200, "offset": 0}
        constrain(query, "flows", "id", sorted(scope.flows))
        if scope.partial:
            constrain_deployment(query, sorted(scope.deployments), adhoc=True)
        runs: list[str] = []
        while True:
            status, page = await self._lookups.call("POST", "/flow_runs/filter", query)
            if status != 200 or not isinstance(page, list):
                raise Reject(502, "upstream-error", "Bad gateway", f"flow runs: HTTP {status}")
            runs += [str(r["id"]) for r in page if scope.run_allowed(r)]
            if len(page) < 200:
                return runs
            if len(runs) > MAX_LOG_RUNS:
                raise bad_request("too many flow runs to scope logs over: filter logs by "
                                  "logs.flow_run_id.any_")
            query["offset"] += 200

    # -- the response --------------------------------------------------------------------------

    async def _safety_net(self, ctx: RequestContext, kind: str, scope: Visible,
                          decide: Callable[..., bool], data: Any) -> Any:
        async def keep(item: Any) -> bool:
            if not isinstance(item, dict):
                return False
            match kind:
                case "flows":
                    return str(item.get("id")) in scope.flows
                case "deployments":
                    return str(item.get("id")) in scope.deployments
                case "flow_runs" | "worker_runs" | "deployment_ids":
                    run = item.get("flow_run") if kind == "worker_runs" and \
                        "flow_run" in item else item
                    return isinstance(run, dict) and scope.run_allowed(run)
                case "task_runs" | "artifacts" | "artifact_key" | "logs":
                    if item.get("flow_run_id"):
                        return decide(await self._lookups.flow_run(item["flow_run_id"]))
                    return False
                case "events" | "events_page":
                    workflow = await _quiet(event_workflow(self._lookups, item))
                    return workflow is not None and decide(workflow)
            return True

        async def kept(items: list[Any]) -> list[Any]:
            out = [i for i in items if await keep(i)]
            if len(out) != len(items):
                ctx.notes.setdefault("scope", {})["dropped"] = len(items) - len(out)
            return out

        if isinstance(data, list):
            return await kept(data)
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            return {**data, "results": await kept(data["results"])}
        if isinstance(data, dict) and isinstance(data.get("events"), list):
            return {**data, "events": await kept(data["events"])}
        if kind == "artifact_key":
            return data if await keep(data) else None
        return data


async def _quiet(coro: Any) -> str | None:
    try:
        result: str | None = await coro
        return result
    except Reject:
        return None  # an event about something gone: nobody's to read


def _object(parent: dict[str, Any] | None, key: str) -> dict[str, Any]:
    assert parent is not None
    value = parent.get(key) or {}
    if not isinstance(value, dict):
        raise bad_request(f"{key} must be an object")
    return dict(value)


def constrain(body: dict[str, Any] | None, key: str, field: str, allowed: list[str]) -> None:
    """AND `body[key][field].any_ ⊆ allowed` into a Prefect filter body."""
    obj = _object(body, key)
    if obj.get("operator", "and_") != "and_":
        raise bad_request(f"orchgate scopes {key}.{field}: use operator and_ at the top of "
                          f"{key} (or_ works inside its fields and in the other filters)")
    sub = _object(obj, field)
    if sub.get("operator", "and_") != "and_":
        raise bad_request(f"orchgate scopes {key}.{field}: its operator must be and_")
    mine = set(allowed)
    asked = sub.get("any_")
    if asked is not None and not isinstance(asked, list):
        raise bad_request(f"{key}.{field}.any_ must be a list")
    sub["any_"] = allowed if asked is None else [a for a in asked if str(a) in mine]
    obj[field] = sub
    assert body is not None
    body[key] = obj


def constrain_deployment(body: dict[str, Any] | None, deployments: list[str], adhoc: bool
                         ) -> None:
    """Runs of allowed deployments (and, with `adhoc`, runs without a deployment)."""
    runs = _object(body, "flow_runs")
    if runs.get("deployment_id") is None and adhoc:
        if runs.get("operator", "and_") != "and_":
            raise bad_request("orchgate scopes flow_runs.deployment_id: use operator and_ at "
                              "the top of flow_runs")
        runs["deployment_id"] = {"operator": "or_", "any_": deployments, "is_null_": True}
        assert body is not None
        body["flow_runs"] = runs
        return
    constrain(body, "flow_runs", "deployment_id", deployments)


def narrow_list(body: dict[str, Any] | None, key: str, allowed: frozenset[str]) -> None:
    assert body is not None
    asked = body.get(key)
    if asked is None:
        body[key] = sorted(allowed)
        return
    if not isinstance(asked, list):
        raise bad_request(f"{key} must be a list")
    body[key] = [a for a in asked if str(a) in allowed]


def scope_events(body: dict[str, Any] | None, key: str, scope: Visible) -> None:
    """Events related to an allowed flow or deployment. A list of `any_resource` filters is
    ANDed (prefect/server/events/filters.py, EventDataFilter.get_filters)."""
    assert body is not None
    event_filter = _object(body, key)
    theirs = event_filter.get("any_resource")
    listed = theirs if isinstance(theirs, list) else ([] if theirs is None else [theirs])
    ids = [f"prefect.flow.{f}" for f in sorted(scope.flows)] + \
        [f"prefect.deployment.{d}" for d in sorted(scope.deployments)]
    event_filter["any_resource"] = [*listed, {"id": ids}]
    body[key] = event_filter


def scope_page_token(query: bytes, scope: Visible) -> bytes:
    """`/events/filter/next?page-token=…` carries the whole filter, unsigned and base64 twice
    (prefect/server/events/storage/__init__.py): a caller could write any filter into it."""
    params = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    token = dict(params).get("page-token")
    try:
        inner = base64.b64decode(base64.b64decode(token or ""), validate=False)
        page = orjson.loads(inner)
    except (ValueError, orjson.JSONDecodeError):
        raise bad_request("the page token is not valid") from None
    if not isinstance(page, dict):
        raise bad_request("the page token is not valid")
    scope_events(page, "filter", scope)
    encoded = base64.b64encode(base64.b64encode(orjson.dumps(page))).decode()
    rest = [(k, v) for k, v in params if k != "page-token"]
    return urlencode([*rest, ("page-token", encoded)]).encode()
