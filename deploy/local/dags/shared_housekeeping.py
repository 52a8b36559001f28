# The dev venv has no airflow: the project-wide mypy run may only skip the import and the
# untyped decorators; `mypy --strict --python-executable .venvs/airflow/bin/python` checks this
# file against the real library.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""Housekeeping owned by no single team (tag ``shared``)."""

from __future__ import annotations

from airflow.sdk import dag, task


@dag(dag_id="shared_housekeeping", schedule=None, catchup=False, tags=["shared"])
def shared_housekeeping() -> None:
    @task
    def vacuum() -> str:
        return "ok"

    vacuum()


shared_housekeeping()
