"""Lineage: a run started by another run says so, and orchgate checks and records it.

A machine identity may send `X-Orchgate-Parent-Run: prefect:<flow_run_id>` or
`airflow:<dag_id>/<run_id>` when it creates a run. The rule (docs/audit.md, "Lineage"):

    accepted  ⇔  the caller is a service account
              ∧  the operation creates a run
              ∧  the parent exists
              ∧  decide(caller's subjects, parent system, parent workflow, read) allows

A header from anyone else (a human, or on another operation) is dropped — recorded as
dropped, never forwarded (edge.py strips `x-orchgate-*` from what goes upstream). A service
account naming a parent that does not exist, or that it may not read, is refused: it is
claiming a lineage it cannot have. The accepted parent goes into the audit record and is
stamped into the child (Airflow's run note, Prefect's run tags).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from proxy.authorize import Authorizer
from proxy.catalog.operation import Action
from proxy.context import RequestContext
from proxy.errors import Reject, bad_request
from proxy.resolve.airflow import AirflowLookups
from proxy.resolve.prefect_lookups import PrefectLookups
from proxy.upstream.forward import Headers

HEADER = b"x-orchgate-parent-run"
CREATES_RUNS = frozenset({"trigger_dag_run", "create_flow_run",
                          "create_flow_run_from_deployment",
                          "bulk_create_flow_runs_from_deployment"})
_PREFECT = re.compile(r"prefect:([0-9a-fA-F-]{36})")
_AIRFLOW = re.compile(r"airflow:([A-Za-z0-9_.-]{1,250})/([^\s/]{1,250})")


class Lineage:
    def __init__(self, authorizer: Authorizer, airflow: AirflowLookups | None,
                 prefect: PrefectLookups | None) -> None:
        self.authorizer = authorizer
        self.airflow = airflow
        self.prefect = prefect

    async def check(self, ctx: RequestContext, headers: Headers) -> None:
        """Sets ctx.parent when the request names a parent run it may name."""
        values = [v for k, v in headers if k == HEADER]
        if not values:
            return
        principal, operation = ctx.principal, ctx.operation
        assert principal is not None and operation is not None
        if principal.kind != "service":
            ctx.notes["parent_dropped"] = "only service accounts name a parent run"
            return
        if operation.name not in CREATES_RUNS:
            ctx.notes["parent_dropped"] = "the operation creates no run"
            return
        if len(values) != 1:
            raise bad_request("one X-Orchgate-Parent-Run header at most")
        text = values[0].decode("latin-1").strip()
        system, run, workflow = await self._parent(text)
        snapshot = self.authorizer.policy.current
        if not snapshot.decide(principal.subjects, system, workflow, Action.READ).allowed:
            raise Reject(403, "parent-run-forbidden", "Forbidden",
                         f"you may not read the parent run's workflow ({system} {workflow!r})")
        ctx.parent = {"run": f"{system}:{run}", "system": system, "workflow": workflow}

    async def _parent(self, text: str) -> tuple[str, str, str]:
        """(system, run id, workflow) of an existing parent run."""
        if m := _PREFECT.fullmatch(text):
            if self.prefect is None:
                raise bad_request("no Prefect upstream for the parent run")
            run = m.group(1).lower()
            try:
                return "prefect", run, await self.prefect.flow_run(run)
            except Reject as err:
                raise _no_parent(text) if err.status in (400, 404) else err from None
        if m := _AIRFLOW.fullmatch(text):
            if self.airflow is None:
                raise bad_request("no Airflow upstream for the parent run")
            dag_id, run_id = m.groups()
            status, _ = await self.airflow.get(
                f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}")
            if status == 404:
                raise _no_parent(text)
            if status != 200:
                raise Reject(503, "upstream-unavailable", "Upstream unavailable",
                             f"airflow: lookup of the parent run answered HTTP {status}")
            return "airflow", f"{dag_id}/{run_id}", dag_id
        raise bad_request("X-Orchgate-Parent-Run must be prefect:<flow_run_id> or "
                          "airflow:<dag_id>/<run_id>")


def _no_parent(text: str) -> Reject:
    return Reject(400, "parent-run-not-found", "Parent run not found",
                  f"the parent run {text[:120]!r} does not exist")
