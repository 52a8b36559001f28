# The dev venv has no prefect: the project-wide mypy run may only skip the import and the
# untyped decorators; `mypy --strict --python-executable .venvs/prefect/bin/python` checks this
# file against the real library.
# mypy: disable-error-code="import-not-found,untyped-decorator"
"""Housekeeping flow owned by no single team (deployed as ``shared-housekeeping/daily``)."""

from __future__ import annotations

from prefect import flow


@flow(name="shared-housekeeping", log_prints=True)
def shared_housekeeping() -> str:
    print("housekeeping done")
    return "ok"
