"""Authorize: decide(principal, system, workflow, action) for every workflow a request touches.

The active policy decides; an optional shadow (candidate) policy decides beside it and any
disagreement is recorded, never enforced. Ownership comes from policy rows, and — opt-in per
system — from upstream `owner:<team>` tags, which only count where no policy row owns the
workflow (anyone who ships a DAG or a deployment can write its tags, so a row always wins).
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.catalog.operation import Action, Operation, Scope
from proxy.context import RequestContext
from proxy.errors import Reject
from proxy.identity import Principal
from proxy.ownership import OwnerTags
from proxy.policy import Decision, PolicySnapshot
from proxy.policy.reload import PolicyStore


class Authorizer:
    def __init__(self, policy: PolicyStore, shadow: PolicyStore | None = None,
                 tags: OwnerTags | None = None) -> None:
        self.policy = policy
        self.shadow = shadow
        self.tags = tags
        self.shadow_disagreements = 0

    async def authorize(self, ctx: RequestContext, principal: Principal, op: Operation) -> None:
        """Set ctx.decision (and owners); raise 403 when any workflow is denied."""
        snapshot = self.policy.current  # read once: one generation decides the whole request
        ctx.policy_generation = snapshot.generation
        ctx.notes["policy_digest"] = snapshot.digest[:16]
        assert ctx.action is not None
        action, system = ctx.action, op.system
        if op.scope == Scope.NONE:
            # Version, health, CSRF, storage: any authenticated caller. A socket that writes
            # (events in) needs the caller to hold that right on some workflow.
            allowed = action == Action.READ or snapshot.grants_anywhere(
                principal.subjects, system, action)
            ctx.decision = Decision(allowed, None, snapshot.generation)
            if not allowed:
                raise forbidden(f"{action.label} is granted to you on no {system} workflow")
            return
        if op.scope == Scope.LIST or (op.list_key and ctx.params.get(op.param) == "~"):
            # Allowed as a request; each item is decided on the response (listing.py).
            ctx.decision = Decision(True, None, snapshot.generation)
            return
        owners: dict[str, None] = {}
        for workflow in ctx.workflows:
            tag_owners = await self._tag_owners(snapshot, system, workflow)
            decision = snapshot.decide(principal.subjects, system, workflow, action, tag_owners)
            owners.update(dict.fromkeys(decision.owners))
            ctx.owner_source = decision.owner_source
            self._shadow(ctx, principal, system, workflow, action, tag_owners, decision)
            ctx.decision = decision
            if not decision.allowed:
                ctx.owners = tuple(owners)
                raise forbidden(f"{action.label} on {system} workflow {workflow!r}: "
                                f"{decision.reason}")
        ctx.owners = tuple(owners)

    def can_read(self, ctx: RequestContext) -> Callable[..., bool]:
        """For list responses: may this caller read a workflow (given the item's own tags)?"""
        snapshot = self.policy.current
        principal = ctx.principal
        assert principal is not None
        assert ctx.system is not None
        system = ctx.system
        use_tags = self.tags is not None and self.tags.enabled(system)

        def can_read(workflow: str, tags: tuple[str, ...] = ()) -> bool:
            tag_owners = OwnerTags.teams(tags) if use_tags else ()
            return snapshot.decide(principal.subjects, system, workflow, Action.READ,
                                   tag_owners).allowed
        return can_read

    async def _tag_owners(self, snapshot: PolicySnapshot, system: str, workflow: str
                          ) -> tuple[str, ...]:
        if self.tags is None or not self.tags.enabled(system) or snapshot.owners(system,
                                                                                 workflow):
            return ()
        return await self.tags.owners(system, workflow)

    def _shadow(self, ctx: RequestContext, principal: Principal, system: str, workflow: str,
                action: Action, tag_owners: tuple[str, ...], active: Decision) -> None:
        if self.shadow is None:
            return
        candidate = self.shadow.current.decide(principal.subjects, system, workflow, action,
                                               tag_owners)
        if candidate.allowed != active.allowed:
            self.shadow_disagreements += 1
            ctx.notes.setdefault("shadow", []).append({
                "workflow": workflow,
                "decision": "allow" if candidate.allowed else "deny",
                "rule": candidate.rule.where if candidate.rule else None,
                "generation": candidate.generation,
            })


def forbidden(detail: str) -> Reject:
    return Reject(403, "forbidden", "Forbidden", detail)
