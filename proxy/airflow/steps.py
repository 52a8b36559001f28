"""Airflow's own steps on the request path (proxy/pipeline.py calls them for Airflow only).

    4 resolve   match       PATCH /dags: the right on every DAG its filters match (many.py)
    7 forward   narrow      batch lists, dagStats: `dag_ids` ∩ what the caller may read
                stamp       a triggered run's note names the caller (stamping.py)
                redact      connection and variable values without `@secrets` (redaction.py)
"""

from __future__ import annotations

from typing import Any

from proxy.airflow import many
from proxy.airflow.redaction import SECRETS
from proxy.airflow.stamping import stamp
from proxy.authorize import Authorizer
from proxy.catalog.operation import Action
from proxy.context import RequestContext
from proxy.listing import send_json
from proxy.resolve.airflow import AirflowLookups


class AirflowSteps:
    def __init__(self, lookups: AirflowLookups, authorizer: Authorizer) -> None:
        self.lookups = lookups
        self.authorizer = authorizer

    async def match(self, ctx: RequestContext) -> None:
        """Sets ctx.workflows to every DAG the query matches; 403 unless all are allowed."""
        assert ctx.principal is not None
        snapshot = self.authorizer.policy.current
        subjects = ctx.principal.subjects

        def decide(dag_id: str, action: Action) -> bool:
            return snapshot.decide(subjects, "airflow", dag_id, action).allowed
        await many.matched(ctx, self.lookups, decide)

    async def narrow(self, ctx: RequestContext, send: Any) -> bool:
        """Narrow the request's `dag_ids`; False when it was answered (nothing readable)."""
        assert ctx.operation is not None
        if await many.narrow(ctx, ctx.operation, self.lookups, self.authorizer.can_read(ctx)):
            return True
        await send_json(ctx, 200, many.empty_collection(ctx.operation), send)
        return False

    def stamp(self, ctx: RequestContext) -> bytes:
        assert ctx.principal is not None
        ctx.notes["stamped"] = True
        return stamp(ctx.json, ctx.principal.name, ctx.request_id,
                     ctx.parent["run"] if ctx.parent else None)

    def hides_secrets(self, ctx: RequestContext) -> bool:
        """Whether this caller lacks the right to see secret values (read on `@secrets`)."""
        return not self.authorizer.can_read(ctx)(SECRETS)
