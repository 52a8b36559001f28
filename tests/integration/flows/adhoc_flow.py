# Runs in the Prefect venv, with PREFECT_API_URL pointing at orchgate.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""An ad-hoc flow of team A: two tasks, so their runs prove the event socket works."""

from __future__ import annotations

import json

from prefect import flow, get_run_logger, task
from prefect.context import get_run_context


@task
def numbers() -> list[int]:
    return [1, 2, 3]


@task
def total(values: list[int]) -> int:
    return sum(values)


@flow(name="team-a-adhoc")
def adhoc() -> int:
    get_run_logger().info("adding numbers through orchgate")
    result: int = total(numbers())
    print(json.dumps({"flow_run_id": str(get_run_context().flow_run.id),
                      "result": result}))
    return result


if __name__ == "__main__":
    adhoc()
