"""Lookups at the Prefect server (3.9.1) with orchgate's own credential: id → workflow.

Cached where the answer cannot change: a deployment's flow and name (Prefect upserts on
(flow_id, name), prefect/server/models/deployments.py), a flow run's `deployment_id` and
`flow_id`, a task run's `flow_run_id`, an artifact's or a state's run (DESIGN.md §5).
Automations and a flow's set of deployments change, so they are read fresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from proxy.errors import Reject, not_found, upstream_unavailable
from proxy.resolve.common import TTLCache, as_uuid, check_workflow_id
from proxy.upstream.forward import Headers, Upstream

MAX_FLOW_DEPLOYMENTS = 200  # Prefect's page limit; a flow with more is refused (fail closed)


def no_flow_run(what: str = "task runs") -> Reject:
    return Reject(403, "forbidden", "Forbidden",
                  f"{what} outside a flow run have no workflow; they are not allowed")


class PrefectLookups:
    """id → workflow lookups at the Prefect server, cached."""

    def __init__(self, upstream: Upstream, auth: Callable[[], bytes], ttl: float) -> None:
        self._upstream = upstream
        self._auth = auth
        self._cache = TTLCache(ttl)

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers: Headers = [(b"authorization", self._auth())]
        payload = None if body is None else orjson.dumps(body)
        # Lookups only read (GET, or a `*/filter` POST): safe to retry.
        return await self._upstream.get_json(f"/api{path}".encode(), headers, method, payload,
                                             retry=True)

    async def _get(self, kind: str, id_: str) -> dict[str, Any]:
        status, data = await self.call("GET", f"/{kind}/{id_}")
        if status == 404:
            raise not_found(f"no {kind.rstrip('s').replace('_', ' ')} with id {id_}")
        if status != 200 or not isinstance(data, dict):
            raise upstream_unavailable("prefect", f"lookup of {kind} answered HTTP {status}")
        return data

    async def flow_name(self, flow_id: object) -> str:
        fid = as_uuid(flow_id, "flow_id")

        async def load() -> str:
            return check_workflow_id((await self._get("flows", fid)).get("name"), "flow name")
        return await self._cache.get_or_load("flow:" + fid, load)

    async def deployment(self, deployment_id: object) -> str:
        did = as_uuid(deployment_id, "deployment_id")

        async def load() -> str:
            data = await self._get("deployments", did)
            flow = await self.flow_name(data.get("flow_id"))
            name = check_workflow_id(data.get("name"), "deployment name")
            return f"{flow}/{name}"
        return await self._cache.get_or_load("deployment:" + did, load)

    async def flow_run(self, flow_run_id: object) -> str:
        rid = as_uuid(flow_run_id, "flow_run_id")

        async def load() -> str:
            data = await self._get("flow_runs", rid)
            return await self.run_workflow(data)
        return await self._cache.get_or_load("flow_run:" + rid, load)

    async def run_workflow(self, run: dict[str, Any]) -> str:
        """The workflow of a flow run object: its deployment's, else its flow's ad-hoc one."""
        if run.get("deployment_id"):
            return await self.deployment(run["deployment_id"])
        return f"{await self.flow_name(run.get('flow_id'))}/-"

    async def task_run(self, task_run_id: object) -> str:
        tid = as_uuid(task_run_id, "task_run_id")

        async def load() -> str:
            data = await self._get("task_runs", tid)
            if not data.get("flow_run_id"):
                raise no_flow_run()
            return await self.flow_run(data["flow_run_id"])
        return await self._cache.get_or_load("task_run:" + tid, load)

    async def artifact(self, artifact_id: object) -> str:
        aid = as_uuid(artifact_id, "artifact id")

        async def load() -> str:
            return await self.artifact_workflow(await self._get("artifacts", aid))
        return await self._cache.get_or_load("artifact:" + aid, load)

    async def artifact_workflow(self, artifact: dict[str, Any]) -> str:
        """An artifact belongs to its run; one made outside any run belongs to no workflow
        but the whole system ("*")."""
        if artifact.get("flow_run_id"):
            return await self.flow_run(artifact["flow_run_id"])
        if artifact.get("task_run_id"):
            return await self.task_run(artifact["task_run_id"])
        return "*"

    async def state(self, kind: str, state_id: object) -> str:
        sid = as_uuid(state_id, "state id")

        async def load() -> str:
            details = (await self._get(f"{kind}_run_states", sid)).get("state_details") or {}
            if kind == "flow":
                return await self.flow_run(details.get("flow_run_id"))
            return await self.task_run(details.get("task_run_id"))
        return await self._cache.get_or_load(f"{kind}_state:{sid}", load)

    async def flow_workflows(self, flow_id: object) -> list[str]:
        """`<flow>/-` and every deployment of the flow (not cached: deployments come and go)."""
        fid = as_uuid(flow_id, "flow_id")
        flow = await self.flow_name(fid)
        status, data = await self.call("POST", "/deployments/filter", {
            "flows": {"id": {"any_": [fid]}}, "limit": MAX_FLOW_DEPLOYMENTS})
        if status != 200 or not isinstance(data, list):
            raise upstream_unavailable("prefect", f"deployments of a flow: HTTP {status}")
        if len(data) >= MAX_FLOW_DEPLOYMENTS:
            raise Reject(403, "forbidden", "Forbidden",
                         "the flow has too many deployments to authorize at once")
        names = [check_workflow_id(d.get("name"), "deployment name") for d in data
                 if isinstance(d, dict)]
        return [f"{flow}/-", *(f"{flow}/{n}" for n in names)]

    async def automation(self, automation_id: object) -> dict[str, Any]:
        return await self._get("automations", as_uuid(automation_id, "automation id"))

    async def latest_artifact(self, key: str) -> dict[str, Any] | None:
        status, data = await self.call("GET", f"/artifacts/{key}/latest")
        if status == 404:
            return None
        if status != 200 or not isinstance(data, dict):
            raise upstream_unavailable("prefect", f"lookup of an artifact answered {status}")
        return data

    async def resource(self, resource_id: str) -> str | None:
        """The workflow an event resource id names (`prefect.flow-run.<id>`, …), if any."""
        kind, _, rest = resource_id.removeprefix("prefect.").partition(".")
        if not resource_id.startswith("prefect.") or not rest:
            return None
        match kind:
            case "flow-run":
                return await self.flow_run(rest)
            case "task-run":
                return await self.task_run(rest)
            case "deployment":
                return await self.deployment(rest)
            case "flow":
                return f"{await self.flow_name(rest)}/-"
        return None
