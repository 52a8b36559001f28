# Runs in the Prefect venv, with PREFECT_API_URL pointing at orchgate.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""A team A flow served from this process: `python served_flow.py DEPLOYMENT_NAME`."""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger, task


@task
def double(value: int) -> int:
    return value * 2


@flow(name="team-a-served")
def served(value: int = 21) -> int:
    result: int = double(value)
    get_run_logger().info("served through orchgate: %s", result)
    return result


if __name__ == "__main__":
    served.serve(name=sys.argv[1], tags=["team-a"], print_starting_message=True)
