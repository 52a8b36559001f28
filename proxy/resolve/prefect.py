"""Prefect: which workflow(s) a request touches (prefect 3.9.1, `/api`).

Workflow ids are `<flow-name>/<deployment-name>`; an ad-hoc run's is `<flow-name>/-`. Ids in
paths and bodies are resolved by lookups at the server with orchgate's own credential, cached:
a deployment's flow, a flow run's `deployment_id` and a task run's `flow_run_id` never change
(DESIGN.md §5), so a cached answer stays right for the cache's lifetime.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from proxy.catalog.operation import Action, Operation, Scope
from proxy.errors import Reject, bad_request, not_found, upstream_unavailable
from proxy.resolve.common import TTLCache, as_uuid, body_field, check_workflow_id
from proxy.upstream.forward import Headers, Upstream


class PrefectLookups:
    """id → workflow lookups at the Prefect server, cached."""

    def __init__(self, upstream: Upstream, auth: Callable[[], bytes], ttl: float) -> None:
        self._upstream = upstream
        self._auth = auth
        self._cache = TTLCache(ttl)

    async def _get(self, kind: str, id_: str) -> dict[str, Any]:
        headers: Headers = [(b"authorization", self._auth())]
        status, data = await self._upstream.get_json(f"/api/{kind}/{id_}".encode(), headers)
        if status == 404:
            raise not_found(f"no {kind.rstrip('s').replace('_', ' ')} with id {id_}")
        if status != 200 or not isinstance(data, dict):
            raise upstream_unavailable("prefect", f"lookup of {kind} answered HTTP {status}")
        return data

    async def _cached(self, key: str, load: Callable[[], Awaitable[str]]) -> str:
        hit = self._cache.get(key)
        if hit is None:
            hit = await load()
            self._cache.put(key, hit)
        return hit

    async def flow_name(self, flow_id: object) -> str:
        fid = as_uuid(flow_id, "flow_id")

        async def load() -> str:
            return check_workflow_id((await self._get("flows", fid)).get("name"), "flow name")
        return await self._cached("flow:" + fid, load)

    async def deployment(self, deployment_id: object) -> str:
        did = as_uuid(deployment_id, "deployment_id")

        async def load() -> str:
            data = await self._get("deployments", did)
            flow = await self.flow_name(data.get("flow_id"))
            name = check_workflow_id(data.get("name"), "deployment name")
            return f"{flow}/{name}"
        return await self._cached("deployment:" + did, load)

    async def flow_run(self, flow_run_id: object) -> str:
        rid = as_uuid(flow_run_id, "flow_run_id")

        async def load() -> str:
            data = await self._get("flow_runs", rid)
            if data.get("deployment_id"):
                return await self.deployment(data["deployment_id"])
            return f"{await self.flow_name(data.get('flow_id'))}/-"
        return await self._cached("flow_run:" + rid, load)

    async def task_run(self, task_run_id: object) -> str:
        tid = as_uuid(task_run_id, "task_run_id")

        async def load() -> str:
            data = await self._get("task_runs", tid)
            if not data.get("flow_run_id"):
                raise _no_flow_run()
            return await self.flow_run(data["flow_run_id"])
        return await self._cached("task_run:" + tid, load)


def _no_flow_run() -> Reject:
    return Reject(403, "forbidden", "Forbidden",
                  "task runs outside a flow run have no workflow; they are not allowed")


class PrefectResolver:
    def __init__(self, lookups: PrefectLookups) -> None:
        self._prefect = lookups

    async def item_workflow(self, op: Operation, item: dict[str, Any]) -> str:
        """The workflow of one item of a list response."""
        if op.resolver == "flow_item":
            return check_workflow_id(item.get("name"), "flow name") + "/-"
        assert op.resolver == "deployment_item"
        flow = await self._prefect.flow_name(item.get("flow_id"))
        return f"{flow}/{check_workflow_id(item.get('name'), 'deployment name')}"

    async def resolve(self, op: Operation, params: dict[str, str], body: Any
                                 ) -> tuple[tuple[str, ...], Action]:
        p = self._prefect
        action = op.action
        if op.needs_body and not isinstance(body, dict | list):
            raise bad_request("the request body must be JSON")
        match op.resolver:
            case "flow_name":
                workflows = [check_workflow_id(body_field(body, op.param), "name") + "/-"]
            case "flow_id":
                workflows = [await p.flow_name(params[op.param]) + "/-"]
            case "deployment_id":
                workflows = [await p.deployment(params[op.param])]
            case "deployment_name":
                flow = check_workflow_id(params["flow_name"], "flow_name")
                workflows = [f"{flow}/{check_workflow_id(params['deployment_name'], 'name')}"]
            case "flow_run_id" if op.scope == Scope.BODY:
                run_id = body_field(body, op.param)
                if not run_id:
                    raise _no_flow_run()
                workflows = [await p.flow_run(run_id)]
            case "flow_run_id":
                workflows = [await p.flow_run(params[op.param])]
            case "task_run_id":
                workflows = [await p.task_run(params[op.param])]
            case "flow_run_create":
                if body_field(body, "deployment_id"):
                    workflows = [await p.deployment(body["deployment_id"])]
                else:
                    workflows = [await p.flow_name(body_field(body, "flow_id")) + "/-"]
            case "logs":
                if not isinstance(body, list) or not body:
                    raise bad_request("the body must be a non-empty list of logs")
                run_ids = {body_field(log, "flow_run_id") for log in body}
                if None in run_ids or "" in run_ids:
                    raise Reject(403, "forbidden", "Forbidden",
                                 "logs without a flow run have no workflow; they are not "
                                 "allowed")
                workflows = [await p.flow_run(r) for r in sorted(map(str, run_ids))]
            case other:
                raise AssertionError(f"unknown resolver {other!r} for {op.name}")
        # Overriding job_variables (image, command, env) of a deployment's run is a change to
        # how the deployment executes: the deploy right, not the run right (DESIGN.md §5).
        if op.inspect_body and isinstance(body, dict) and body.get("job_variables"):
            action = max(action, Action.DEPLOY)
        return tuple(dict.fromkeys(workflows)), action
