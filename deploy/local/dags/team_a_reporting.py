# The dev venv has no airflow: the project-wide mypy run may only skip the import and the
# untyped decorators; `mypy --strict --python-executable .venvs/airflow/bin/python` checks this
# file against the real library.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""Team A's reporting example: one BashOperator task."""

from __future__ import annotations

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag


@dag(dag_id="team_a_reporting", schedule=None, catchup=False, tags=["team-a"])
def team_a_reporting() -> None:
    BashOperator(task_id="render_report", bash_command="echo 'team-a report ready'")


team_a_reporting()
