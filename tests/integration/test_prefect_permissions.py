"""Prefect through orchgate: who may do what, what readers see, and the traps (DESIGN.md §5).

Personas (deploy/local/devstack.py): alice deploys team A, amy reads team A, bob runs team B,
carol administers everything, dave has nothing; all of team A and B read shared workflows.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
import pytest
from devstack import LocalStack

from tests.integration.support import bearer

API = "/prefect/api"
OWN, OTHER, SHARED = "team-a-etl/nightly", "team-b-ingest/hourly", "shared-housekeeping/daily"


def _runs_of(stack: LocalStack, deployment_id: str) -> int:
    status, count = stack.prefect.request(
        "POST", "/flow_runs/count", {"deployments": {"id": {"any_": [deployment_id]}}})
    assert status == 200
    return int(count)


@pytest.mark.parametrize("path", ["/admin/version", "/csrf-token?client=x", "/admin/storage",
                                  "/health", "/ready"])
def test_always_needed_routes_answer_every_authenticated_caller(
        proxy: httpx2.Client, tokens: dict[str, str], path: str) -> None:
    for persona in ("dave", "amy", "agent-team-b"):
        response = proxy.get(API + path, headers=bearer(tokens[persona]))
        # The stack's server runs without CSRF protection: it says so with 422, which every
        # client accepts (prefect/client/orchestration/base.py); the point is it got through.
        expected = 422 if path.startswith("/csrf-token") else 200
        assert response.status_code == expected, (persona, path, response.text)
    assert proxy.get(API + path).status_code == 401


# (persona, workflow, may read, may run) — run = create a flow run from the deployment.
MATRIX = [
    ("alice", OWN, True, True), ("alice", OTHER, False, False), ("alice", SHARED, True, False),
    ("amy", OWN, True, False), ("amy", OTHER, False, False), ("amy", SHARED, True, False),
    ("bob", OWN, False, False), ("bob", OTHER, True, True), ("bob", SHARED, True, False),
    ("carol", OWN, True, True), ("carol", OTHER, True, True), ("carol", SHARED, True, True),
    ("dave", OWN, False, False), ("dave", OTHER, False, False), ("dave", SHARED, False, False),
    ("ci-team-a", OWN, True, True), ("ci-team-a", OTHER, False, False),
    ("agent-team-b", OTHER, True, False), ("agent-team-b", OWN, False, False),
]


@pytest.mark.parametrize(("persona", "workflow", "may_read", "may_run"), MATRIX)
def test_permission_matrix(stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str],
                           persona: str, workflow: str, may_read: bool, may_run: bool) -> None:
    deployment_id = stack.deployments[workflow]
    auth = bearer(tokens[persona])
    read = proxy.get(f"{API}/deployments/{deployment_id}", headers=auth)
    assert read.status_code == (200 if may_read else 403), read.text
    before = _runs_of(stack, deployment_id)
    run = proxy.post(f"{API}/deployments/{deployment_id}/create_flow_run", json={},
                     headers=auth)
    assert run.status_code == (201 if may_run else 403), run.text
    # Denials never reach the server: its own count of runs did not move.
    assert _runs_of(stack, deployment_id) == before + (1 if may_run else 0)
    if may_run:
        tags = run.json()["tags"]
        name = "ci-team-a" if persona == "ci-team-a" else persona
        assert f"orchgate.user:{name}" in tags
        assert f"orchgate.request:{run.headers['x-request-id']}" in tags
        # Deleting a run is deploy: only who may deploy the workflow.
        deleted = proxy.delete(f"{API}/flow_runs/{run.json()['id']}", headers=auth)
        assert deleted.status_code == (204 if persona in ("alice", "carol", "ci-team-a")
                                       else 403), deleted.text


def test_admin_only_server_objects(proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    pool = {"name": f"orchgate-{uuid.uuid4().hex[:8]}", "type": "process"}
    for persona in ("alice", "bob", "ci-team-a"):
        response = proxy.post(f"{API}/work_pools/", json=pool, headers=bearer(tokens[persona]))
        assert response.status_code == 403, persona
    created = proxy.post(f"{API}/work_pools/", json=pool, headers=bearer(tokens["carol"]))
    assert created.status_code == 201, created.text
    assert proxy.get(f"{API}/work_pools/{pool['name']}",
                     headers=bearer(tokens["amy"])).status_code == 200
    assert proxy.delete(f"{API}/work_pools/{pool['name']}",
                        headers=bearer(tokens["carol"])).status_code == 204


def _names(response: httpx2.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def test_a_team_a_reader_sees_no_trace_of_team_b(stack: LocalStack, proxy: httpx2.Client,
                                                 tokens: dict[str, str]) -> None:
    # A run of team B to hide (created directly at the server, with a log line).
    b_id = stack.deployments[OTHER]
    status, b_run = stack.prefect.request("POST", f"/deployments/{b_id}/create_flow_run", {})
    assert status == 201
    status, _ = stack.prefect.request("POST", "/logs/", [{
        "name": "t", "level": 20, "message": "team b secret", "timestamp":
        "2026-01-01T00:00:00Z", "flow_run_id": b_run["id"]}])
    assert status == 201
    a_id = stack.deployments[OWN]
    auth = bearer(tokens["amy"])
    # The caller tries to widen the filter with or_ in another object: the scope still holds.
    wide = {"flow_runs": {"operator": "or_", "id": {"any_": [b_run["id"]]},
                          "name": {"like_": ""}}}

    flows = _names(proxy.post(f"{API}/flows/filter", json={}, headers=auth))
    assert sorted(f["name"] for f in flows) == ["shared-housekeeping", "team-a-etl"]
    assert _names(proxy.post(f"{API}/flows/count", json={}, headers=auth)) == 2
    deployments = _names(proxy.post(f"{API}/deployments/filter", json={}, headers=auth))
    assert {d["id"] for d in deployments} == {a_id, stack.deployments[SHARED]}
    assert _names(proxy.post(f"{API}/deployments/count", json={}, headers=auth)) == 2
    page = _names(proxy.post(f"{API}/deployments/paginate", json={"limit": 1}, headers=auth))
    assert (page["count"], page["pages"], len(page["results"])) == (2, 2, 1)
    runs = _names(proxy.post(f"{API}/flow_runs/filter", json=wide, headers=auth))
    assert b_run["id"] not in {r["id"] for r in runs}
    assert all(r["deployment_id"] != b_id for r in runs)
    assert _names(proxy.post(f"{API}/flow_runs/count", json={
        "deployments": {"id": {"any_": [b_id]}}}, headers=auth)) == 0
    runs_page = _names(proxy.post(f"{API}/flow_runs/paginate", json={"limit": 200},
                                  headers=auth))
    counted = _names(proxy.post(f"{API}/flow_runs/count", json={}, headers=auth))
    assert runs_page["count"] == counted == len(runs_page["results"])
    assert all(r["deployment_id"] != b_id for r in runs_page["results"])
    task_runs = _names(proxy.post(f"{API}/task_runs/filter", json={}, headers=auth))
    assert all(t["flow_run_id"] != b_run["id"] for t in task_runs)
    logs = _names(proxy.post(f"{API}/logs/filter", json={}, headers=auth))
    assert all(log["flow_run_id"] != b_run["id"] for log in logs)
    assert _names(proxy.post(f"{API}/logs/filter", json={
        "logs": {"flow_run_id": {"any_": [b_run["id"]]}}}, headers=auth)) == []
    events = _names(proxy.post(f"{API}/events/filter", json={"filter": {}, "limit": 50},
                               headers=auth))
    assert b_run["id"] not in str(events["events"]) and b_id not in str(events["events"])
    artifacts = _names(proxy.post(f"{API}/artifacts/filter", json={}, headers=auth))
    assert all(a.get("flow_run_id") != b_run["id"] for a in artifacts)
    assert proxy.get(f"{API}/flow_runs/{b_run['id']}", headers=auth).status_code == 403


def test_traps(stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    alice, bob, amy = (bearer(tokens[p]) for p in ("alice", "bob", "amy"))
    # POST /flows/ upserts: run on <flow>/-; a reader may not.
    assert proxy.post(f"{API}/flows/", json={"name": "team-a-etl"},
                      headers=alice).status_code in (200, 201)
    assert proxy.post(f"{API}/flows/", json={"name": "team-a-etl"},
                      headers=amy).status_code == 403
    assert proxy.post(f"{API}/flows/", json={"name": "team-a-etl"},
                      headers=bob).status_code == 403
    # POST /deployments/ overwriting team B's deployment: deploy on team-b-ingest/hourly.
    status, b_dep = stack.prefect.request("GET", f"/deployments/{stack.deployments[OTHER]}")
    assert status == 200
    overwrite = proxy.post(f"{API}/deployments/", headers=alice, json={
        "name": "hourly", "flow_id": b_dep["flow_id"], "entrypoint": "evil.py:x"})
    assert overwrite.status_code == 403
    status, after = stack.prefect.request("GET", f"/deployments/{stack.deployments[OTHER]}")
    assert after["entrypoint"] == b_dep["entrypoint"]
    # POST /flow_runs/ with deployment_id: run on that deployment; job_variables: deploy.
    assert proxy.post(f"{API}/flow_runs/", headers=alice, json={
        "flow_id": b_dep["flow_id"], "deployment_id": b_dep["id"]}).status_code == 403
    assert proxy.post(f"{API}/deployments/{b_dep['id']}/create_flow_run", headers=bob,
                      json={"job_variables": {"command": "id"}}).status_code == 403
    # Automations: run on every deployment they name; an inferred target is admin.
    trigger = {"type": "event", "posture": "Reactive", "expect": ["x.y"], "threshold": 1,
               "within": 0}
    for persona, dep, expected in ((alice, b_dep["id"], 403), (bob, b_dep["id"], 201)):
        response = proxy.post(f"{API}/automations/", headers=persona, json={
            "name": "t", "trigger": trigger, "actions": [
                {"type": "run-deployment", "source": "selected", "deployment_id": dep}]})
        assert response.status_code == expected, response.text
    assert proxy.post(f"{API}/automations/", headers=bob, json={
        "name": "t", "trigger": trigger,
        "actions": [{"type": "run-deployment", "source": "inferred"}]}).status_code == 403
    # serve()/deploy() housekeeping: the deployment's owner may clear its triggers.
    a_dep = stack.deployments[OWN]
    assert proxy.delete(f"{API}/automations/owned-by/prefect.deployment.{a_dep}",
                        headers=alice).status_code == 202
    assert proxy.delete(f"{API}/automations/owned-by/prefect.deployment.{a_dep}",
                        headers=bob).status_code == 403


def test_client_sent_automation_headers_never_reach_prefect(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    fake = str(uuid.uuid4())
    response = proxy.post(
        f"{API}/deployments/{stack.deployments[OWN]}/create_flow_run", json={},
        headers={**bearer(tokens["alice"]), "Prefect-Automation-Id": fake,
                 "Prefect-Automation-Name": "forged"})
    assert response.status_code == 201, response.text
    created_by = response.json().get("created_by")
    assert created_by is None or created_by.get("id") != fake
