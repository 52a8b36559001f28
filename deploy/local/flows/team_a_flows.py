# The dev venv has no prefect: the project-wide mypy run may only skip the import and the
# untyped decorators; `mypy --strict --python-executable .venvs/prefect/bin/python` checks this
# file against the real library.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""Team A's Prefect example flow (deployed as ``team-a-etl/nightly``)."""

from __future__ import annotations

from prefect import flow, task


@task
def extract() -> list[int]:
    return [1, 2, 3]


@task
def transform(rows: list[int]) -> int:
    return sum(rows)


@flow(name="team-a-etl", log_prints=True)
def team_a_etl() -> int:
    total: int = transform(extract())
    print(f"team-a etl total={total}")
    return total
