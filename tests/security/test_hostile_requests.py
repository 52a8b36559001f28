"""The table-driven hostile-input suite (tests/security/cases.py) against a running orchgate.

Each case: the status, what the upstream received (nothing, or exactly the sanitized
request), the audit record, and readiness afterwards (tests/security/kit.py, `run_case`).
"""

from __future__ import annotations

import json

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


def test_filter_with_top_level_or_cannot_widen_the_scope(kit: Kit) -> None:
    """A Prefect filter whose top-level `or_` asks for another team's flows: orchgate ANDs the
    caller's scope into the body, and drops any item outside it from the answer."""
    flows = [{"id": "0b0e2d4e-1f3b-4c39-9d6a-0123456789a1", "name": "team-a-etl"},
             {"id": "0b0e2d4e-1f3b-4c39-9d6a-0123456789b2", "name": "team-b-ingest"}]
    kit.upstream.on("POST", "/api/flows/filter", Reply(flows))
    kit.upstream.on("POST", "/api/deployments/filter", Reply([]))
    widen = {"or_": [{"flows": {"name": {"like_": "team-b"}}}], "limit": 5}
    response = kit.send(kit.raw("POST", "/prefect/api/flows/filter",
                                headers=[("Content-Type", "application/json")],
                                body=json.dumps(widen).encode()))
    assert response.status == 200, response.raw[:300]
    assert [f["name"] for f in json.loads(response.body)] == ["team-a-etl"]
    [asked] = [r for r in kit.forwarded() if r.path == "/api/flows/filter" and b"or_" in r.body]
    sent = asked.body.decode()
    assert flows[1]["id"] not in sent  # the scope ANDed in names only what alice may read
    record = kit.gate.audit_record(dict(response.headers)["x-request-id"])
    assert (record["status"], record["decision"]) == (200, "allow")
    kit.assert_ready()
