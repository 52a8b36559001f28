"""The table-driven hostile-input suite (tests/security/cases.py) against a running orchgate.

Each case: the status, what the upstream received (nothing, or exactly the sanitized
request), the audit record, and readiness afterwards (tests/security/kit.py, `run_case`).
"""

from __future__ import annotations

import pytest

from tests.harness import Reply
from tests.security.cases import BODIES, CASES, HEADERS, PATHS, TOKENS
from tests.security.kit import Case, Kit, run_case


@pytest.fixture
def scripted(kit: Kit) -> Kit:
    # A list read over many workflows: the answer holds a team A and a team B flow.
    kit.upstream.on("POST", "/api/flows/filter", Reply(
        [{"id": "f1", "name": "team-a-etl"}, {"id": "f2", "name": "team-b-ingest"}]))
    return kit


def test_the_table_covers_every_category() -> None:
    assert len(CASES) >= 120
    assert len({c.id for c in CASES}) == len(CASES)
    for category in (TOKENS, PATHS, HEADERS, BODIES):
        assert len(category) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request(scripted: Kit, case: Case) -> None:
    run_case(scripted, case)
