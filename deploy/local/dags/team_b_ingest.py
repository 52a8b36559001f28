# The dev venv has no airflow: the project-wide mypy run may only skip the import and the
# untyped decorators; `mypy --strict --python-executable .venvs/airflow/bin/python` checks this
# file against the real library.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""Team B's ingest example: fetch >> load, a run succeeds in a few seconds."""

from __future__ import annotations

from airflow.sdk import dag, task


@dag(dag_id="team_b_ingest", schedule=None, catchup=False, tags=["team-b"])
def team_b_ingest() -> None:
    @task
    def fetch() -> dict[str, int]:
        return {"records": 42}

    @task
    def load() -> str:
        return "loaded"

    fetch() >> load()


team_b_ingest()
