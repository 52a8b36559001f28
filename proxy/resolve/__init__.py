"""Resolve: which workflow(s) a request touches, and the action its body asks for.

Each system has its resolver; an operation's `scope` says where to look (see
catalog/operation.py). LIST and NONE operations name no workflow up front.
"""

from __future__ import annotations

from typing import Any, Protocol

from proxy.catalog.operation import Action, Operation, Scope
from proxy.listing import ItemWorkflows
from proxy.resolve.common import check_workflow_id

__all__ = ["Resolver", "SystemResolver", "check_workflow_id"]


class SystemResolver(Protocol):
    async def resolve(self, op: Operation, params: dict[str, str], body: Any
                      ) -> tuple[tuple[str, ...], Action]: ...

    async def item_workflow(self, op: Operation, item: Any) -> ItemWorkflows: ...


class Resolver:
    def __init__(self, systems: dict[str, SystemResolver]) -> None:
        self._systems = systems

    async def resolve(self, op: Operation, params: dict[str, str], body: Any
                      ) -> tuple[tuple[str, ...], Action]:
        if op.scope in (Scope.NONE, Scope.LIST) or (op.list_key and params.get(op.param) == "~"):
            return (), op.action
        return await self._systems[op.system].resolve(op, params, body)

    async def item_workflow(self, op: Operation, item: Any) -> ItemWorkflows:
        return await self._systems[op.system].item_workflow(op, item)
