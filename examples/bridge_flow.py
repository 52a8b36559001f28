# Runs in the Prefect venv with the orchgate checkout on PYTHONPATH (for proxy/bridge.py):
#   PYTHONPATH=. PREFECT_API_URL=$ORCHGATE_URL/prefect/api PREFECT_API_KEY=$HUMAN_TOKEN \
#   ORCHGATE_URL=… ORCHGATE_BRIDGE_TOKEN=$SERVICE_ACCOUNT_TOKEN python examples/bridge_flow.py
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""Team A's bridge: a Prefect flow that runs the Airflow DAG `team_a_etl` as its own step.

A person starts the flow (their token is the Prefect client's); the bridge task calls Airflow
through orchgate as the flow's service account, naming this flow run as the DAG run's parent.
`orchgate audit lineage airflow:team_a_etl/<run>` then shows person → flow run → DAG run.
"""

from __future__ import annotations

import json
import sys

from prefect import flow
from prefect.runtime import flow_run

from proxy.bridge import airflow_dag_task

run_airflow_dag = airflow_dag_task()


@flow(name="team-a-bridge")
def bridge(dag_id: str = "team_a_etl") -> dict[str, str]:
    result: dict[str, str] = run_airflow_dag(dag_id, conf={"requested_by": "team-a-bridge"})
    print(json.dumps({"flow_run_id": str(flow_run.id), **result}))
    return result


if __name__ == "__main__":
    bridge(*sys.argv[1:2])
