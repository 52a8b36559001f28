"""Who may do what to which DAG, through orchgate to the real Airflow 3.3.2.

Personas and rights come from deploy/local/devstack.py and policies/policy.csv. Every request
carries a unique `probe` query parameter (Airflow ignores unknown ones); Airflow's own access
log (`proc-logs/api-server.log`) then shows which requests reached it: every allowed one, and
not one denied.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx2
import pytest
from devstack import LocalStack

from tests.integration.support import bearer

OWN_A, OTHER_B, SHARED = "team_a_etl", "team_b_ingest", "shared_housekeeping"
PERSONAS = ("amy", "alice", "bob", "carol", "dave", "ci-team-a", "agent-team-b")

# persona → the DAGs it may read / run / deploy (policies/policy.csv); admin: carol only.
READ = {"amy": {OWN_A, SHARED}, "alice": {OWN_A, SHARED}, "bob": {OTHER_B, SHARED},
        "carol": {OWN_A, OTHER_B, SHARED}, "dave": set(), "ci-team-a": {OWN_A},
        "agent-team-b": {OTHER_B}}
RUN = {"amy": set(), "alice": {OWN_A}, "bob": {OTHER_B}, "carol": {OWN_A, OTHER_B, SHARED},
       "dave": set(), "ci-team-a": {OWN_A}, "agent-team-b": set()}
DEPLOY = {"amy": set(), "alice": {OWN_A}, "bob": set(), "carol": {OWN_A, OTHER_B, SHARED},
          "dave": set(), "ci-team-a": {OWN_A}, "agent-team-b": set()}
ADMIN = {"carol"}


@dataclass(frozen=True)
class Call:
    persona: str
    action: str
    dag: str
    method: str
    path: str
    body: object
    allowed: bool
    probe: str = ""


def _calls() -> list[Call]:
    calls = []
    for persona in PERSONAS:
        for dag in (OWN_A, OTHER_B, SHARED):
            calls += [
                Call(persona, "read", dag, "GET", f"/dags/{dag}/details", None,
                     dag in READ[persona]),
                # Unpausing a DAG that is not paused: the run right, and no change.
                Call(persona, "run", dag, "PATCH", f"/dags/{dag}", {"is_paused": False},
                     dag in RUN[persona]),
                # Deleting a run (one that does not exist: Airflow answers 404 once it has
                # authorized the role, and nothing is written): the deploy right.
                Call(persona, "deploy", dag, "DELETE", f"/dags/{dag}/dagRuns/no_such_run",
                     None, dag in DEPLOY[persona]),
            ]
        calls.append(Call(persona, "admin", "*", "GET", "/pools", None, persona in ADMIN))
    return calls


def _access_log(stack: LocalStack) -> str:
    return (stack.airflow.home / "proc-logs" / "api-server.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def file_tokens(stack: LocalStack) -> dict[str, str]:
    tokens = {}
    for dag in (OWN_A, OTHER_B, SHARED):
        status, details = stack.airflow.request("GET", f"/dags/{dag}/details")
        assert status == 200, details
        tokens[dag] = details["file_token"]
    return tokens


def test_permission_matrix_and_denied_calls_never_reach_airflow(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    done: list[Call] = []
    for call in _calls():
        probe = uuid.uuid4().hex
        response = proxy.request(call.method, f"/airflow/api/v2{call.path}",
                                 params={"probe": probe}, json=call.body,
                                 headers=bearer(tokens[call.persona]))
        expected = {"GET": (200,), "PATCH": (200,), "DELETE": (404,)}[call.method] \
            if call.allowed else (403,)
        assert response.status_code in expected, (call, response.text)
        record = stack.audit_record(response.headers["x-request-id"])
        assert record["decision"] == ("allow" if call.allowed else "deny"), call
        assert record["action"] == call.action
        if not call.allowed:
            assert response.headers["content-type"] == "application/problem+json"
            assert record["upstream_status"] is None
        done.append(Call(**{**call.__dict__, "probe": probe}))

    # Airflow's access log: every allowed probe arrives (bounded wait), no denied one ever.
    allowed = [c.probe for c in done if c.allowed]
    deadline = time.monotonic() + 20
    while not all(p in (log := _access_log(stack)) for p in allowed):
        assert time.monotonic() < deadline, "allowed calls missing from Airflow's access log"
        time.sleep(0.5)
    reached = [c for c in done if not c.allowed and c.probe in log]
    assert reached == []
    assert len([c for c in done if not c.allowed]) > 40  # the matrix really denies


def test_parsing_a_dag_file_again_is_deploy_on_every_dag_of_the_file(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str],
        file_tokens: dict[str, str]) -> None:
    # The file_token names a file; orchgate looks up its DAGs (resolve/airflow.py).
    for persona, dag, allowed in (("alice", OWN_A, True), ("bob", OWN_A, False),
                                  ("alice", OTHER_B, False), ("amy", OWN_A, False)):
        # (Airflow's answer to SQLite's lock is sent again by the client: conftest.py.)
        response = proxy.put(f"/airflow/api/v2/parseDagFile/{file_tokens[dag]}",
                             headers=bearer(tokens[persona]))
        # A second request while one is pending is Airflow's 409: it got there too.
        assert response.status_code in ((201, 409) if allowed else (403,)), response.text
        record = stack.audit_record(response.headers["x-request-id"])
        assert record["workflows"] == [dag]
        assert record["action"] == "deploy"


def test_airflow_records_the_caller_not_a_shared_identity(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    response = proxy.patch(f"/airflow/api/v2/dags/{OWN_A}", json={"is_paused": False},
                           headers=bearer(tokens["ci-team-a"]))
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 20
    while True:
        status, logs = stack.airflow.request(
            "GET", f"/eventLogs?dag_id={OWN_A}&event_pattern=patch_dag&owner=ci-team-a")
        assert status == 200, logs
        if logs["total_entries"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_the_bulk_entity_trap_is_refused(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    status, run = stack.airflow.request("POST", f"/dags/{OTHER_B}/dagRuns",
                                        {"logical_date": None, "note": "target"})
    assert status == 200, run
    run_id = run["dag_run_id"]
    trap = {"actions": [{"action": "update", "entities": [
        {"dag_run_id": run_id, "dag_id": OTHER_B, "state": "failed", "note": "pwned"}]}]}
    for path in (f"/dags/{OWN_A}/dagRuns", "/dags/~/dagRuns"):
        response = proxy.patch("/airflow/api/v2" + path, json=trap,
                               headers=bearer(tokens["alice"]))
        assert response.status_code == 403, response.text
        assert OTHER_B in response.json()["detail"]
    clear = proxy.post("/airflow/api/v2/dags/~/clearDagRuns",
                       json={"dag_runs": [{"dag_run_id": run_id, "dag_id": OTHER_B}],
                             "dry_run": False}, headers=bearer(tokens["alice"]))
    assert clear.status_code == 403, clear.text
    status, after = stack.airflow.request("GET", f"/dags/{OTHER_B}/dagRuns/{run_id}")
    assert status == 200
    assert after["note"] == "target"
    assert after["state"] != "failed" or run["state"] == "failed"


def test_pausing_by_pattern_needs_every_matched_dag(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    refused = proxy.patch("/airflow/api/v2/dags", params={"dag_id_pattern": "team"},
                          json={"is_paused": True}, headers=bearer(tokens["alice"]))
    assert refused.status_code == 403, refused.text
    assert "1 of the 3 DAGs" in refused.json()["detail"]
    assert OTHER_B not in refused.json()["detail"]
    for pattern in ("~", "%", "team_|shared"):
        response = proxy.patch("/airflow/api/v2/dags", params={"dag_id_pattern": pattern},
                               json={"is_paused": True}, headers=bearer(tokens["alice"]))
        assert response.status_code == 403, (pattern, response.text)
    status, dag = stack.airflow.request("GET", f"/dags/{OTHER_B}")
    assert status == 200
    assert dag["is_paused"] is False  # nothing reached Airflow

    allowed = proxy.patch("/airflow/api/v2/dags", params={"dag_id_pattern": "team_a"},
                          json={"is_paused": False}, headers=bearer(tokens["alice"]))
    assert allowed.status_code == 200, allowed.text
    assert {d["dag_id"] for d in allowed.json()["dags"]} == {"team_a_etl", "team_a_reporting"}


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/airflow/ui/auth/token"),
    ("GET", "/airflow/ui/config"),
    ("POST", "/airflow/auth/token"),
    ("GET", "/airflow/execution/health"),
    ("GET", "/airflow/docs"),
    ("GET", "/airflow/openapi.json"),
    ("GET", "/airflow/api/v2/auth/login"),
    ("GET", "/airflow/api/v1/dags"),
])
def test_blocked_surfaces_are_refused_with_a_reason(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str], method: str,
        path: str) -> None:
    probe = uuid.uuid4().hex
    response = proxy.request(method, path, params={"probe": probe},
                             headers=bearer(tokens["carol"]))
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["type"] == "urn:orchgate:problem:blocked"
    assert "orchgate" in body["detail"] or "/api/v2" in body["detail"]
    assert probe not in _access_log(stack)


def test_connection_secrets_through_orchgate(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    conn = {"connection_id": "orchgate_probe_db", "conn_type": "postgres", "host": "db",
            "password": "pw-never-shown", "extra": '{"region": "eu-west-1"}'}
    status, _ = stack.airflow.request("POST", "/connections", conn)
    assert status in (201, 409)
    # Admins without a deny on @secrets see values as Airflow shows them; others get 403.
    admin = proxy.get("/airflow/api/v2/connections/orchgate_probe_db",
                      headers=bearer(tokens["carol"]))
    assert admin.status_code == 200, admin.text
    assert admin.json()["extra"] == '{"region": "eu-west-1"}'
    assert admin.json()["password"] != "pw-never-shown"  # Airflow masks it itself
    for persona in ("alice", "amy", "bob", "dave", "ci-team-a"):
        denied = proxy.get("/airflow/api/v2/connections", headers=bearer(tokens[persona]))
        assert denied.status_code == 403
    stack.audit_record(denied.headers["x-request-id"])  # the last record is on file: scan all
    assert "pw-never-shown" not in stack.audit_file.read_text()
