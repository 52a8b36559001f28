# The dev venv has no prefect: the plain project-wide mypy run may only skip the import and
# the untyped decorators; `mypy --strict --python-executable .venvs/prefect/bin/python` checks
# this file against the real library.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""Create the example Prefect flows and deployments of two teams (run with the Prefect venv).

Usage: python prefect_examples.py FLOWS_DIR    (PREFECT_API_URL / PREFECT_API_AUTH_STRING set)

Prints ``{"flow/deployment": "<deployment id>"}`` as JSON on its last stdout line.
Deployments get no schedule: runs happen only when a test or the demo creates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

POOL = "local"

# (file:function entrypoint, deployment name, team tag); the flow name comes from @flow(name=).
EXAMPLES = [
    ("team_a_flows.py:team_a_etl", "nightly", "team-a"),
    ("team_b_flows.py:team_b_ingest", "hourly", "team-b"),
    ("shared_flows.py:shared_housekeeping", "daily", "shared"),
]


async def ensure_pool() -> None:
    # A reused home keeps the pool from an earlier run.
    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))


async def main(flows_dir: Path) -> dict[str, str]:
    await ensure_pool()
    ids: dict[str, str] = {}
    for entrypoint, deployment, tag in EXAMPLES:
        # Local source: the process worker runs the code straight from flows_dir.
        loaded = await Flow.afrom_source(source=str(flows_dir), entrypoint=entrypoint)
        deployment_id = await loaded.adeploy(
            name=deployment,
            work_pool_name=POOL,
            tags=[tag],
            description=f"orchgate example owned by {tag}",
            print_next_steps=False,
            build=False,
            push=False,
        )
        ids[f"{loaded.name}/{deployment}"] = str(deployment_id)
    return ids


if __name__ == "__main__":
    result = asyncio.run(main(Path(sys.argv[1]).resolve()))
    print(json.dumps(result, sort_keys=True))
