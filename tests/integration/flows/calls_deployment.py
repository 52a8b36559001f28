# Runs in the Prefect venv, with PREFECT_API_URL pointing at orchgate.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""A team A flow that runs team A's deployment `team-a-etl/nightly` and waits for it."""

from __future__ import annotations

import json

from prefect import flow
from prefect.context import get_run_context
from prefect.deployments import run_deployment


@flow(name="team-a-caller")
def caller() -> str:
    child = run_deployment("team-a-etl/nightly", timeout=90, poll_interval=1)
    print(json.dumps({"flow_run_id": str(get_run_context().flow_run.id),
                      "child_id": str(child.id), "child_state": child.state_type.value}))
    return str(child.id)


if __name__ == "__main__":
    caller()
