# The dev venv has no prefect: the project-wide mypy run may only skip the import and the
# untyped decorators; `mypy --strict --python-executable .venvs/prefect/bin/python` checks this
# file against the real library.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""Team B's Prefect example flow (deployed as ``team-b-ingest/hourly``)."""

from __future__ import annotations

from prefect import flow, task


@task
def fetch() -> dict[str, int]:
    return {"records": 42}


@flow(name="team-b-ingest", log_prints=True)
def team_b_ingest() -> int:
    records: int = fetch()["records"]
    print(f"team-b ingested {records} records")
    return records
