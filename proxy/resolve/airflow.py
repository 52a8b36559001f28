"""Airflow: which DAG(s) a request touches (apache-airflow 3.3.2, `/api/v2`)."""

from __future__ import annotations

from typing import Any

from proxy.catalog.operation import Action, Operation
from proxy.resolve.common import check_workflow_id


class AirflowResolver:
    async def resolve(self, op: Operation, params: dict[str, str], body: Any
                      ) -> tuple[tuple[str, ...], Action]:
        return (check_workflow_id(params[op.param], op.param),), op.action

    async def item_workflow(self, op: Operation, item: dict[str, Any]) -> str:
        """The workflow of one item of a list response."""
        return check_workflow_id(item.get("dag_id"), "dag_id")
