"""`make demo`: the whole local stack, and how to use it. Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from devstack import SERVICES, USERS, LocalStack, local_stack

ROOT = Path(__file__).resolve().parents[2]


def usage(stack: LocalStack) -> str:
    stack_file = stack.stack_file.relative_to(ROOT)
    audit = stack.audit_file.relative_to(ROOT)
    url = stack.orchgate_url
    token = f".venv/bin/python deploy/local/idp_client.py --stack-file {stack_file}"
    personas = "\n".join(
        [f"    {u:<13} groups: {', '.join(g) or '(none)'}" for u, g in USERS.items()]
        + [f"    {s:<13} service account (client credentials)" for s in SERVICES]
    )
    return f"""
orchgate is up at {url}
  identity provider  {stack.issuer}   (development only)
  Airflow 3.3.2      {stack.airflow.url}   (reach it through orchgate: {url}/airflow)
  Prefect 3.9.1      {stack.prefect.url}   (reach it through orchgate: {url}/prefect)
  policies           policies/model.conf, policies/policy.csv
  audit trail        {stack.audit_file.relative_to(ROOT)}

Personas:
{personas}

Get a token (alice deploys team A's workflows; bob runs team B's; amy reads team A's):
    export TOKEN=$({token} alice)

Airflow through orchgate with curl:
    curl -s -H "Authorization: Bearer $TOKEN" {url}/airflow/api/v2/dags
    curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
         -d '{{"logical_date": null}}' {url}/airflow/api/v2/dags/team_a_etl/dagRuns
    curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
         -d '{{"logical_date": null}}' {url}/airflow/api/v2/dags/team_b_ingest/dagRuns   # 403

Airflow with airflowctl:
    export AIRFLOW_HOME=$PWD/.stack/airflowctl AIRFLOW_CLI_TOKEN=$TOKEN
    .venv/bin/airflowctl auth login --api-url {url}/airflow --api-token "$TOKEN" --skip-keyring
    .venv/bin/airflowctl dags list -o table
    .venv/bin/airflowctl dags trigger team_a_etl
    .venv/bin/airflowctl dags pause team_a_reporting

Prefect through orchgate with the prefect CLI:
    export PREFECT_API_URL={url}/prefect/api PREFECT_API_KEY=$TOKEN
    export PREFECT_CLIENT_CUSTOM_HEADERS="{{\\"Authorization\\": \\"Bearer $TOKEN\\"}}"
    .venvs/prefect/bin/prefect deployment ls
    .venvs/prefect/bin/prefect deployment run team-a-etl/nightly     # a worker runs it
    .venvs/prefect/bin/prefect flow-run ls

A Prefect flow (started by alice) whose task runs an Airflow DAG as the service account
ci-team-a, and the lineage orchgate records from the person to the DAG run:
    export CI_TOKEN=$({token} ci-team-a)
    PYTHONPATH=. ORCHGATE_URL={url} ORCHGATE_BRIDGE_TOKEN=$CI_TOKEN \\
      .venvs/prefect/bin/python examples/bridge_flow.py        # prints the DAG run id
    .venv/bin/orchgate audit lineage airflow:team_a_etl/<dag_run_id> {audit}*

Watch the audit trail:
    tail -f {audit}

Press Ctrl-C to stop everything.
"""


def main() -> int:
    workdir = ROOT / ".stack"
    started = time.monotonic()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("starting the dev identity provider, Airflow, Prefect and orchgate …", flush=True)
    port = int(os.environ.get("ORCHGATE_PORT", "0")) or None
    try:
        with local_stack(workdir, orchgate_port=port, worker=True) as stack:
            print(f"(ready in {time.monotonic() - started:.0f} s)")
            print(usage(stack), flush=True)
            while not stop.wait(1.0):
                if not stack.orchgate.alive():
                    print("orchgate exited; see .stack/logs/orchgate.log", file=sys.stderr)
                    return 1
    except KeyboardInterrupt:
        pass
    print("stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
