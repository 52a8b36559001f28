"""Prefect's own steps against the recording upstream: socket frame filters, run stamps,
CSRF headers, and the scope injected into filters."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import websockets.sync.client
from websockets.typing import Subprotocol

from tests.harness import FakeIdP, RecordingUpstream, Reply, StartOrchgate, bearer, wait_for

A_FLOW, B_FLOW = str(uuid.uuid4()), str(uuid.uuid4())
A_DEP, B_DEP = str(uuid.uuid4()), str(uuid.uuid4())
A_RUN, B_RUN = str(uuid.uuid4()), str(uuid.uuid4())
API = "/prefect/api"


def script_prefect(upstream: RecordingUpstream) -> None:
    upstream.on("GET", f"/api/flows/{A_FLOW}", Reply({"id": A_FLOW, "name": "team-a-etl"}))
    upstream.on("GET", f"/api/flows/{B_FLOW}", Reply({"id": B_FLOW, "name": "team-b-ingest"}))
    upstream.on("GET", f"/api/deployments/{A_DEP}",
                Reply({"id": A_DEP, "flow_id": A_FLOW, "name": "nightly"}))
    upstream.on("GET", f"/api/deployments/{B_DEP}",
                Reply({"id": B_DEP, "flow_id": B_FLOW, "name": "hourly"}))
    upstream.on("GET", f"/api/flow_runs/{A_RUN}",
                Reply({"id": A_RUN, "flow_id": A_FLOW, "deployment_id": A_DEP}))
    upstream.on("GET", f"/api/flow_runs/{B_RUN}",
                Reply({"id": B_RUN, "flow_id": B_FLOW, "deployment_id": B_DEP}))
    upstream.on("POST", "/api/flows/filter", Reply([
        {"id": A_FLOW, "name": "team-a-etl"}, {"id": B_FLOW, "name": "team-b-ingest"}]))
    upstream.on("POST", "/api/deployments/filter", Reply([
        {"id": A_DEP, "flow_id": A_FLOW, "name": "nightly", "tags": []},
        {"id": B_DEP, "flow_id": B_FLOW, "name": "hourly", "tags": []}]))


def event_of(run_id: str) -> str:
    return json.dumps({"id": str(uuid.uuid4()), "event": "prefect.flow-run.Running",
                       "resource": {"prefect.resource.id": f"prefect.flow-run.{run_id}"},
                       "related": []})


def test_events_in_of_workflows_the_caller_may_not_run_are_dropped_and_counted(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    orchgate = start_orchgate()
    script_prefect(upstream)
    upstream.prefect_socket("/api/events/in", orchgate.prefect_auth)
    token = idp.token("alice", groups=["team-a-deployers"])
    own, other = event_of(A_RUN), event_of(B_RUN)

    with websockets.sync.client.connect(
            orchgate.ws_url(API + "/events/in"), subprotocols=[Subprotocol("prefect")],
            additional_headers=bearer(token), open_timeout=5, close_timeout=5) as ws:
        # Prefect's client always sends an auth message, with no token of its own here.
        ws.send(json.dumps({"type": "auth", "token": None}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "auth_success"}
        for frame in (other, own, "not json"):
            ws.send(frame)
        assert ws.recv(timeout=5) == own  # echoed: the only frame that reached the server

    [session] = upstream.sessions
    wait_for(lambda: session.closed, what="upstream socket closed")
    assert session.messages == [own]
    record = orchgate.audit_where(lambda r: r["path"] == API + "/events/in")
    assert record["notes"]["websocket"]["dropped_in"] == 2


def test_runs_created_through_orchgate_are_stamped_and_csrf_headers_pass(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    orchgate = start_orchgate()
    script_prefect(upstream)
    upstream.on("POST", f"/api/deployments/{A_DEP}/create_flow_run", Reply({}, status=201))
    with orchgate.client() as client:
        response = client.post(
            f"{API}/deployments/{A_DEP}/create_flow_run",
            json={"tags": ["mine", "orchgate.user:carol"]},
            headers={**bearer(idp.token("alice", groups=["team-a-deployers"])),
                     "Prefect-Csrf-Token": "t0k", "Prefect-Csrf-Client": "c1",
                     "Prefect-Automation-Id": str(uuid.uuid4())})
    assert response.status_code == 201, response.text
    [sent] = upstream.requests(f"/api/deployments/{A_DEP}/create_flow_run")
    assert json.loads(sent.body)["tags"] == [
        "mine", "orchgate.user:alice", f"orchgate.request:{response.headers['x-request-id']}"]
    assert sent.header("prefect-csrf-token") == "t0k"
    assert sent.header("prefect-csrf-client") == "c1"
    assert sent.header("prefect-automation-id") is None


@pytest.mark.parametrize(("path", "body", "expected"), [
    ("/deployments/count", {"deployments": {"name": {"any_": ["hourly"]}}},
     {"deployments": {"name": {"any_": ["hourly"]}, "id": {"any_": [A_DEP]}}}),
    ("/flow_runs/count", {"flow_runs": {"operator": "or_", "id": {"any_": [B_RUN]}}},
     {"flow_runs": {"operator": "or_", "id": {"any_": [B_RUN]}},
      "flows": {"id": {"any_": [A_FLOW]}}}),
])
def test_a_filter_carries_the_callers_scope_upstream(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate,
        path: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
    orchgate = start_orchgate()
    script_prefect(upstream)
    upstream.on("POST", "/api" + path, Reply(0))
    with orchgate.client() as client:
        response = client.post(API + path, json=body,
                               headers=bearer(idp.token("rita", groups=["team-a-readers"])))
    assert response.status_code == 200, response.text
    [sent] = upstream.requests("/api" + path)
    assert json.loads(sent.body) == expected
