# mypy: disable-error-code="import-not-found,untyped-decorator"
"""Team B's DAG file that fails to import, on purpose: Airflow records an import error for a
file that defines no DAG. orchgate shows such an error only to callers who may read every DAG
(tests/integration/test_airflow_leaks.py). The leading "_" keeps it out of the DAGs the local
stack waits for (deploy/local/upstreams.py)."""

from __future__ import annotations

from airflow.sdk import dag

raise RuntimeError("team_b secret detail: this file is broken on purpose")


@dag(dag_id="team_b_broken", schedule=None)
def team_b_broken() -> None: ...
