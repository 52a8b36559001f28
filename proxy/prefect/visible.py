"""What a caller may see (or run, or deploy) on the Prefect server, as ids to inject.

Prefect's filter bodies AND their top-level objects (prefect/server/api/*: `flows`,
`flow_runs`, `deployments`, … are separate arguments, each an `EXISTS`/`WHERE` of its own), so
a scope injected as `flows.id.any_` holds whatever the caller wrote elsewhere, `or_` included.
The ids come from an inventory of every deployment and flow, read with orchgate's credential
and kept for a few seconds (a deployment created meanwhile is hidden until then: fail closed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.errors import upstream_unavailable
from proxy.resolve.prefect_lookups import PrefectLookups

INVENTORY_SECONDS = 3.0
PAGE = 200  # Prefect's default API page limit
MAX_ITEMS = 20_000

Decide = Callable[[str, tuple[str, ...]], bool]  # (workflow, deployment tags) → allowed


@dataclass(frozen=True, slots=True)
class Inventory:
    flows: dict[str, str]  # flow id → name
    deployments: dict[str, tuple[str, str, tuple[str, ...]]]  # id → (flow id, name, tags)


@dataclass(frozen=True, slots=True)
class Visible:
    """The scope of one caller for one action."""

    everything: bool  # the right on "*": nothing to inject
    deployments: frozenset[str]  # deployment ids
    adhoc_flows: frozenset[str]  # flow ids whose ad-hoc workflow `<flow>/-` is allowed
    flows: frozenset[str]  # flows with any allowed workflow
    partial: bool  # a flow with an allowed deployment whose ad-hoc runs are not allowed

    def run_allowed(self, run: dict[str, Any]) -> bool:
        """A flow run object (safety net): its deployment's, else its flow's ad-hoc right."""
        if self.everything:
            return True
        if run.get("deployment_id"):
            return str(run["deployment_id"]) in self.deployments
        return str(run.get("flow_id")) in self.adhoc_flows


class Inventories:
    def __init__(self, lookups: PrefectLookups, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._lookups = lookups
        self._clock = clock
        self._current: tuple[float, Inventory] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Inventory:
        async with self._lock:  # single flight: one reload for a burst of requests
            if self._current is not None and self._current[0] > self._clock():
                return self._current[1]
            flows = {str(f["id"]): str(f["name"]) for f in await self._all("/flows/filter")}
            deployments = {
                str(d["id"]): (str(d["flow_id"]), str(d["name"]),
                               tuple(t for t in d.get("tags") or [] if isinstance(t, str)))
                for d in await self._all("/deployments/filter")}
            inventory = Inventory(flows, deployments)
            self._current = (self._clock() + INVENTORY_SECONDS, inventory)
            return inventory

    def forget(self) -> None:
        self._current = None

    async def _all(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            status, page = await self._lookups.call(
                "POST", path, {"limit": PAGE, "offset": len(items)})
            if status != 200 or not isinstance(page, list):
                raise upstream_unavailable("prefect", f"inventory {path}: HTTP {status}")
            items.extend(i for i in page if isinstance(i, dict))
            if len(page) < PAGE or len(items) >= MAX_ITEMS:
                return items


def visible(inventory: Inventory, decide: Decide, everything: bool) -> Visible:
    if everything:
        return Visible(True, frozenset(inventory.deployments), frozenset(inventory.flows),
                       frozenset(inventory.flows), False)
    adhoc = frozenset(fid for fid, name in inventory.flows.items() if decide(f"{name}/-", ()))
    deployments = frozenset(
        did for did, (fid, name, tags) in inventory.deployments.items()
        if fid in inventory.flows and decide(f"{inventory.flows[fid]}/{name}", tags))
    of_deployments = {inventory.deployments[d][0] for d in deployments}
    return Visible(False, deployments, adhoc, adhoc | of_deployments,
                   bool(of_deployments - adhoc))
