# The dev venv has no airflow: the project-wide mypy run may only skip the import and the
# untyped decorators; `mypy --strict --python-executable .venvs/airflow/bin/python` checks this
# file against the real library.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""Team A's ETL example: extract >> transform, a run succeeds in a few seconds."""

from __future__ import annotations

from airflow.sdk import dag, task


@dag(dag_id="team_a_etl", schedule=None, catchup=False, tags=["team-a"])
def team_a_etl() -> None:
    @task
    def extract() -> list[int]:
        return [1, 2, 3]

    @task
    def transform() -> int:
        return sum(range(4))

    # Plain ordering (no XCom argument) keeps the file type-correct under mypy --strict.
    extract() >> transform()


team_a_etl()
