"""Prefect: which workflow(s) a request touches (prefect 3.9.1, `/api`).

Workflow ids are `<flow-name>/<deployment-name>`; an ad-hoc run's is `<flow-name>/-`; "*" is
every workflow (server-wide objects). Ids are resolved by cached lookups
(proxy/resolve/prefect_lookups.py). The action can rise with the body: `job_variables`
overrides (image, command, env) change how a deployment executes, which is deploy.
"""

from __future__ import annotations

from typing import Any

from proxy.catalog.operation import Action, Operation, Scope
from proxy.errors import Reject, bad_request, not_found
from proxy.resolve.common import as_uuid, body_field, check_workflow_id
from proxy.resolve.prefect_lookups import PrefectLookups, no_flow_run

__all__ = ["PrefectLookups", "PrefectResolver", "automation_needs", "event_workflow"]

EVERYTHING = "*"
# Automation actions acting on a deployment they name (prefect/server/events/actions.py).
DEPLOYMENT_ACTIONS = {"run-deployment": Action.RUN, "pause-deployment": Action.DEPLOY,
                      "resume-deployment": Action.DEPLOY}
HARMLESS_ACTIONS = {"do-nothing"}


class PrefectResolver:
    def __init__(self, lookups: PrefectLookups) -> None:
        self.lookups = lookups

    async def item_workflow(self, op: Operation, item: dict[str, Any]) -> str:
        """The workflow of one item of a list response (listing.py's generic path)."""
        if op.resolver == "flows":
            return check_workflow_id(item.get("name"), "flow name") + "/-"
        flow = await self.lookups.flow_name(item.get("flow_id"))
        return f"{flow}/{check_workflow_id(item.get('name'), 'deployment name')}"

    async def resolve(self, op: Operation, params: dict[str, str], body: Any
                      ) -> tuple[tuple[str, ...], Action]:
        if op.needs_body and not isinstance(body, dict | list):
            raise bad_request("the request body must be JSON")
        workflows, action = await self._resolve(op, params, body)
        # Overriding job_variables (image, command, env) of a run is a change to how the
        # deployment executes: the deploy right, not the run right (DESIGN.md §5).
        if op.inspect_body and _sets_job_variables(body):
            action = max(action, Action.DEPLOY)
        return tuple(dict.fromkeys(workflows)), action

    async def _resolve(self, op: Operation, params: dict[str, str], body: Any
                       ) -> tuple[list[str], Action]:
        p = self.lookups
        action = op.action
        match op.resolver:
            case "system":
                return [EVERYTHING], action
            case "flow_name" if op.scope == Scope.BODY:
                return [check_workflow_id(body_field(body, op.param), "name") + "/-"], action
            case "flow_name":
                return [check_workflow_id(params[op.param], op.param) + "/-"], action
            case "flow_id":
                return [await p.flow_name(params[op.param]) + "/-"], action
            case "flow_all":
                return await p.flow_workflows(params[op.param]), action
            case "deployment_id":
                return [await p.deployment(params[op.param])], action
            case "deployment_name":
                flow = check_workflow_id(params["flow_name"], "flow_name")
                name = check_workflow_id(params["deployment_name"], "deployment_name")
                return [f"{flow}/{name}"], action
            case "deployment_create":
                # Prefect upserts on (flow_id, name): an existing deployment of that flow and
                # name has this very workflow id, so deploy on it is checked for both.
                flow = await p.flow_name(body_field(body, "flow_id"))
                return [f"{flow}/{check_workflow_id(body_field(body, 'name'), 'name')}"], action
            case "flow_run_id" if op.scope == Scope.BODY:
                run_id = body_field(body, op.param)
                if not run_id:
                    raise no_flow_run()
                return [await p.flow_run(run_id)], action
            case "flow_run_id":
                return [await p.flow_run(params[op.param])], action
            case "task_run_id":
                return [await p.task_run(params[op.param])], action
            case "flow_run_state_id":
                return [await p.state("flow", params[op.param])], action
            case "task_run_state_id":
                return [await p.state("task", params[op.param])], action
            case "flow_run_create":
                if body_field(body, "deployment_id"):
                    return [await p.deployment(body["deployment_id"])], action
                return [await p.flow_name(body_field(body, "flow_id")) + "/-"], action
            case "logs":
                if not isinstance(body, list) or not body:
                    raise bad_request("the body must be a non-empty list of logs")
                run_ids = {body_field(log, "flow_run_id") for log in body}
                if None in run_ids or "" in run_ids:
                    raise no_flow_run("logs")
                return [await p.flow_run(r) for r in sorted(map(str, run_ids))], action
            case "artifact_create":
                return [await p.artifact_workflow(body if isinstance(body, dict) else {})
                        ], action
            case "artifact_id":
                return [await p.artifact(params[op.param])], action
            case "events":
                if not isinstance(body, list):
                    raise bad_request("the body must be a list of events")
                found = [await event_workflow(p, e) for e in body]
                return [w or EVERYTHING for w in found], action
            case "automation":
                return await automation_needs(p, body)
            case "automation_id":
                existing = await p.automation(params[op.param])
                return await automation_needs(p, existing)
            case "automation_replace":
                old, old_action = await automation_needs(p, await p.automation(params["id"]))
                new, new_action = await automation_needs(p, body)
                return [*old, *new], max(old_action, new_action)
            case "resource":
                workflow = await p.resource(params[op.param])
                return [workflow or EVERYTHING], action
            case other:
                raise AssertionError(f"unknown resolver {other!r} for {op.name}")


def _sets_job_variables(body: Any) -> bool:
    if isinstance(body, dict):
        return bool(body.get("job_variables"))
    if isinstance(body, list):  # bulk creation: one entry is enough
        return any(isinstance(b, dict) and b.get("job_variables") for b in body)
    return False


async def automation_needs(p: PrefectLookups, automation: Any
                           ) -> tuple[list[str], Action]:
    """Automations start runs out of orchestration's sight: gate them on what they do.

    An action on a selected deployment needs run (pause/resume: deploy; overriding its
    job_variables: deploy) on it. Every other action reaches workflows nobody selected — an
    inferred deployment or flow run, a webhook or notification carrying any event — so it
    needs the right on every workflow ("*").
    """
    if not isinstance(automation, dict):
        raise bad_request("the automation must be a JSON object")
    actions = [a for key in ("actions", "actions_on_trigger", "actions_on_resolve")
               for a in (automation.get(key) or [])]
    workflows: list[str] = []
    action = Action.RUN
    for act in actions:
        if not isinstance(act, dict):
            raise bad_request("automation actions must be objects")
        kind = act.get("type")
        if kind in HARMLESS_ACTIONS:
            continue
        if kind in DEPLOYMENT_ACTIONS and act.get("source", "selected") == "selected" \
                and act.get("deployment_id"):
            try:
                workflows.append(await p.deployment(act["deployment_id"]))
            except Reject as reject:
                if reject.status == 404:
                    raise not_found("an automation action names an unknown deployment"
                                    ) from None
                raise
            action = max(action, DEPLOYMENT_ACTIONS[kind])
            if act.get("job_variables"):
                action = Action.DEPLOY
        else:
            workflows.append(EVERYTHING)
    return workflows or [EVERYTHING], action


async def event_workflow(p: PrefectLookups, event: Any) -> str | None:
    """The workflow an event is about: its flow run (task-run events name it as related,
    and their task run may not exist yet), else its deployment, task run or flow."""
    if not isinstance(event, dict):
        raise bad_request("an event must be a JSON object")
    ids: list[str] = []
    for resource in [event.get("resource"), *(event.get("related") or [])]:
        if isinstance(resource, dict) and isinstance(resource.get("prefect.resource.id"), str):
            ids.append(resource["prefect.resource.id"])
    for prefix in ("prefect.flow-run.", "prefect.deployment.", "prefect.task-run.",
                   "prefect.flow."):
        for rid in ids:
            if rid.startswith(prefix):
                as_uuid(rid[len(prefix):], "resource id")
                return await p.resource(rid)
    return None
