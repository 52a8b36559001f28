"""Prefect's own steps on the request path: scoped reads, run stamping, socket frame filters.

The pipeline calls these for Prefect operations only (proxy/pipeline.py, step 7).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from proxy.authorize import Authorizer
from proxy.catalog.operation import Action
from proxy.context import RequestContext
from proxy.errors import Reject
from proxy.prefect.scoped import ScopedReads
from proxy.resolve.prefect import PrefectResolver, event_workflow

# Runs created through orchgate carry who asked and which request (seen in Prefect's UI).
STAMPED = {"create_flow_run", "create_flow_run_from_deployment",
           "bulk_create_flow_runs_from_deployment"}
USER_TAG = "orchgate.user:"
REQUEST_TAG = "orchgate.request:"
PARENT_TAG = "orchgate.parent:"  # lineage: the run that started this one (proxy/lineage.py)

FrameFilter = Callable[[str], Awaitable[bool]]


class PrefectSteps:
    def __init__(self, resolver: PrefectResolver, authorizer: Authorizer) -> None:
        self.resolver = resolver
        self.scoped = ScopedReads(resolver, authorizer)

    def stamp(self, ctx: RequestContext, body: bytes | None) -> bytes | None:
        """The body of a run creation with tags naming the caller and the request."""
        if ctx.operation is None or ctx.operation.name not in STAMPED or ctx.principal is None:
            return body
        tags = [USER_TAG + ctx.principal.name, REQUEST_TAG + ctx.request_id]
        if ctx.parent is not None:
            tags.append(PARENT_TAG + ctx.parent["run"])
        runs = ctx.json if isinstance(ctx.json, list) else [ctx.json]
        for run in runs:
            if isinstance(run, dict):
                given = run.get("tags")
                theirs: list[Any] = given if isinstance(given, list) else []
                # A caller cannot pose as someone else: its own orchgate.* tags are dropped.
                run["tags"] = [t for t in theirs if not (isinstance(t, str) and
                                                         t.startswith("orchgate."))] + tags
        ctx.notes["stamped"] = tags
        return orjson.dumps(ctx.json)

    def frame_filters(self, ctx: RequestContext
                      ) -> tuple[FrameFilter | None, FrameFilter | None]:
        """(inbound, outbound) filters for a socket: events in need run on their workflow,
        events and logs out need read on theirs. True lets a frame through."""
        assert ctx.operation is not None
        name = ctx.operation.name
        lookups = self.resolver.lookups
        run = self.scoped.decider(ctx, Action.RUN)
        read = self.scoped.decider(ctx, Action.READ)
        everything = read("*")

        async def workflow_of_event(event: Any) -> str | None:
            try:
                return await event_workflow(lookups, event)
            except Reject:
                return "?"  # names a run or deployment that is unknown or malformed

        async def events_in(text: str) -> bool:
            event = _json(text)
            workflow = await workflow_of_event(event)
            # Events about no workflow (worker heartbeats, custom resources) pass: the socket
            # itself needs run somewhere. Unknown or forbidden workflows are dropped.
            return workflow is None or (workflow != "?" and run(workflow))

        async def events_out(text: str) -> bool:
            message = _json(text)
            if not isinstance(message, dict) or message.get("type") != "event":
                return True  # protocol messages (auth answers, pings)
            workflow = await workflow_of_event(message.get("event"))
            return everything or (workflow not in (None, "?") and read(workflow))

        async def logs_out(text: str) -> bool:
            message = _json(text)
            if not isinstance(message, dict) or message.get("type") != "log":
                return True
            log = message.get("log")
            run_id = log.get("flow_run_id") if isinstance(log, dict) else None
            if everything:
                return True
            if not run_id:
                return False
            try:
                return read(await lookups.flow_run(run_id))
            except Reject:
                return False

        match name:
            case "stream_events_in":
                return events_in, None
            case "stream_workspace_events_out":
                return None, events_out
            case "stream_logs_out":
                return None, logs_out
        return None, None


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
