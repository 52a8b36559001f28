"""Prefect's own, unmodified clients through orchgate: `flow.serve()` triggered with
`prefect deployment run --watch`, a process worker, `run_deployment()` from a flow.

Credential modes of Prefect 3.9.1's client (measured here):
- `PREFECT_CLIENT_CUSTOM_HEADERS='{"Authorization": "Bearer <jwt>"}'` reaches every HTTP
  request and every socket upgrade: everything works.
- `PREFECT_API_KEY=<jwt>` alone reaches HTTP only: its sockets (`/events/in`, `/events/out`,
  `/logs/out`) send `{"type": "auth", "token": null}` and nothing on the upgrade, so orchgate
  refuses them. Ad-hoc flows still complete, but their task runs are lost; `serve()` refuses
  to start and a worker crashes every run it picks up (both need `/events/in`); `--watch` fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from devstack import LocalStack
from procs import Proc, start, wait_until
from upstreams import PREFECT_VENV, start_prefect_worker

from tests.integration.support import FLOWS, bearer

API = "/prefect/api"
PREFECT = PREFECT_VENV / "bin"


def _client_env(stack: LocalStack, home: Path, token: str, mode: str) -> dict[str, str]:
    """A Prefect client's environment with the OIDC token in `mode` ("headers" or "key")."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{PREFECT}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": stack.orchgate_url + API,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    if mode == "headers":
        env["PREFECT_CLIENT_CUSTOM_HEADERS"] = json.dumps({"Authorization": f"Bearer {token}"})
    else:
        env["PREFECT_API_KEY"] = token
    return env


def _sub(record: dict[str, Any]) -> str | None:
    principal = record["principal"]
    return str(principal["sub"]) if isinstance(principal, dict) else None


def _audit(stack: LocalStack, operation: str, sub: str) -> list[dict[str, Any]]:
    return [r for r in stack.audit_records() if r["operation"] == operation and _sub(r) == sub]


def _sockets(stack: LocalStack, operation: str, sub: str) -> list[dict[str, Any]]:
    return [r["notes"]["websocket"] for r in _audit(stack, operation, sub)
            if "websocket" in (r.get("notes") or {})]


def _eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"{what}: not within {timeout:.0f}s"
            return value
        time.sleep(0.5)


def _flow_run(stack: LocalStack, run_id: str) -> dict[str, Any]:
    status, run = stack.prefect.request("GET", f"/flow_runs/{run_id}")
    assert status == 200, run
    return dict(run)


def _task_runs(stack: LocalStack, run_id: str) -> list[tuple[str, str]]:
    status, task_runs = stack.prefect.request(
        "POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    assert status == 200, task_runs
    return sorted((t["name"].rsplit("-", 1)[0], t["state_type"]) for t in task_runs)


def _completed_with_tasks(stack: LocalStack, run_id: str, tasks: list[str], timeout: float
                          ) -> None:
    """The run completed and its task runs, reported only over `/events/in`, are recorded."""
    want = sorted((t, "COMPLETED") for t in tasks)
    _eventually(lambda: _flow_run(stack, run_id)["state_type"] == "COMPLETED"
                and _task_runs(stack, run_id) == want, timeout, f"flow run {run_id}")


@pytest.fixture(scope="module", autouse=True)
def _forget_served_deployments(stack: LocalStack) -> Iterator[None]:
    """Other modules expect team A to own the example deployments only."""
    yield
    status, flow = stack.prefect.request("GET", "/flows/name/team-a-served")
    if status == 200:
        assert stack.prefect.request("DELETE", f"/flows/{flow['id']}")[0] == 204


@pytest.fixture(scope="module")
def team_a_worker(stack: LocalStack, tokens: dict[str, str],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A process worker on pool `local` talking to orchgate as the service account
    ci-team-a (deploys team A), not to the server."""
    home = tmp_path_factory.mktemp("worker")
    token = tokens["ci-team-a"]
    worker = start_prefect_worker(stack.prefect, extra_env={
        "PREFECT_API_URL": stack.orchgate_url + API,
        "PREFECT_API_AUTH_STRING": "",  # no server credential: the token only
        "PREFECT_HOME": str(home),
        "PREFECT_CLIENT_CUSTOM_HEADERS": json.dumps({"Authorization": f"Bearer {token}"}),
    }, timeout=60)
    try:
        yield worker
    finally:
        worker.stop()


def test_served_flow_triggered_with_watch(stack: LocalStack, tokens: dict[str, str],
                                          tmp_path: Path) -> None:
    env = _client_env(stack, tmp_path / "alice", tokens["alice"], "headers")
    served = start("served-flow", [str(PREFECT / "python"), str(FLOWS / "served_flow.py"),
                                   "watch"], env, FLOWS, tmp_path / "served.log",
                   soft_signals=(signal.SIGINT,), grace=10.0)
    try:
        wait_until(lambda: stack.prefect.request(
            "GET", "/deployments/name/team-a-served/watch")[0] == 200, 60,
            "the served deployment", proc=served, interval=0.5)
        done = subprocess.run(
            [str(PREFECT / "prefect"), "deployment", "run", "team-a-served/watch", "--watch",
             "--watch-timeout", "60"], env=env, capture_output=True, text=True, timeout=90,
            check=False, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = " ".join(done.stdout.split())  # rich wraps long lines
        assert "Flow run finished successfully in 'Completed'" in out
        assert "prefect.flow-run.Completed" in out  # came over /events/out
        assert "served through orchgate: 42" in out  # a log line, came over /logs/out
        run_id = out.split("UUID: ")[1].split()[0]
        _completed_with_tasks(stack, run_id, ["double"], 30)
    finally:
        served.stop()
    # serve() pauses its deployment on shutdown (PATCH /deployments/{id} as its owner).
    status, deployment = stack.prefect.request("GET", "/deployments/name/team-a-served/watch")
    assert status == 200 and deployment["paused"] is True
    assert any(s["frames_out"] > 0 for s in _sockets(stack, "stream_logs_out", "alice"))
    assert any(s["frames_out"] > 0
               for s in _sockets(stack, "stream_workspace_events_out", "alice"))
    assert any(s["frames_in"] > 0 for s in _sockets(stack, "stream_events_in", "alice"))
    decided = {(r["operation"], r["action"], r["decision"]) for r in _audit(
        stack, "delete_automations_owned_by_resource", "alice") + _audit(
        stack, "update_deployment", "alice")}
    assert decided == {("delete_automations_owned_by_resource", "deploy", "allow"),
                       ("update_deployment", "deploy", "allow")}


def test_worker_picks_up_only_runs_its_account_may_run(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str],
        team_a_worker: Proc) -> None:
    own = proxy.post(f"{API}/deployments/{stack.deployments['team-a-etl/nightly']}"
                     "/create_flow_run", json={}, headers=bearer(tokens["alice"]))
    assert own.status_code == 201, own.text
    # Team B's run, created directly: the pool is shared, the worker's account may not run it.
    status, other = stack.prefect.request(
        "POST", f"/deployments/{stack.deployments['team-b-ingest/hourly']}/create_flow_run", {})
    assert status == 201, other
    _completed_with_tasks(stack, own.json()["id"], ["extract", "transform"], 60)
    assert _flow_run(stack, other["id"])["state_type"] == "SCHEDULED"
    stack.prefect.request("DELETE", f"/flow_runs/{other['id']}")
    polls = _audit(stack, "get_scheduled_flow_runs", "ci-team-a")
    assert polls and all(r["decision"] == "allow" for r in polls)
    # The run's own process inherits the worker's token: its task runs came over /events/in.
    assert any(s["frames_in"] > 0 for s in _sockets(stack, "stream_events_in", "ci-team-a"))
    assert team_a_worker.alive()


def test_run_deployment_from_another_flow(stack: LocalStack, tokens: dict[str, str],
                                          team_a_worker: Proc, tmp_path: Path) -> None:
    env = _client_env(stack, tmp_path, tokens["alice"], "headers")
    done = subprocess.run([str(PREFECT / "python"), str(FLOWS / "calls_deployment.py")],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["child_state"] == "COMPLETED"
    child = _flow_run(stack, result["child_id"])
    assert child["deployment_id"] == stack.deployments["team-a-etl/nightly"]
    assert "orchgate.user:alice" in child["tags"]
    # The parent tracks its child as a task run (created by run_deployment through orchgate).
    status, link = stack.prefect.request("GET", f"/task_runs/{child['parent_task_run_id']}")
    assert status == 200 and link["flow_run_id"] == result["flow_run_id"]
    _completed_with_tasks(stack, result["child_id"], ["extract", "transform"], 30)


def test_api_key_alone_reaches_http_but_not_the_sockets(
        stack: LocalStack, tokens: dict[str, str], tmp_path: Path) -> None:
    env = _client_env(stack, tmp_path, tokens["alice"], "key")
    before = len(stack.audit_records())
    adhoc = subprocess.run([str(PREFECT / "python"), str(FLOWS / "adhoc_flow.py")],
                           env=env, capture_output=True, text=True, timeout=120, check=False)
    assert adhoc.returncode == 0, adhoc.stderr[-3000:]
    run_id = json.loads(adhoc.stdout.strip().splitlines()[-1])["flow_run_id"]
    assert _flow_run(stack, run_id)["state_type"] == "COMPLETED"
    assert "empty bearer token" in adhoc.stderr  # the event socket was refused ...
    time.sleep(2)
    assert _task_runs(stack, run_id) == []  # ... so the task runs were lost
    served = subprocess.run([str(PREFECT / "python"), str(FLOWS / "served_flow.py"), "key"],
                            env=env, capture_output=True, text=True, timeout=60, check=False,
                            cwd=FLOWS)
    assert served.returncode != 0
    assert "Unable to authenticate to the event stream" in served.stderr
    sockets = [r for r in stack.audit_records()[before:]
               if r["operation"] == "stream_events_in" and _sub(r) in (None, "alice")]
    # One refused socket for the flow, one for serve(); none reached the server.
    assert len(sockets) >= 2 and all(r["principal"] is None and r["problem"] == "bad-request"
                                     and r["upstream_status"] is None for r in sockets)


async def _listen(stack: LocalStack, token: str, path: str, subscribe: dict[str, Any],
                  emit: Callable[[], None], done: Callable[[list[Any]], bool]) -> list[Any]:
    """Open a socket through orchgate, subscribe, emit, collect messages until `done`."""
    got: list[Any] = []
    url = stack.orchgate_url.replace("http", "ws", 1) + API + path
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url, protocols=("prefect",), headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send_str(json.dumps({"type": "auth", "token": None}))
        assert json.loads((await ws.receive(timeout=10)).data)["type"] == "auth_success"
        await ws.send_str(json.dumps({"type": "filter", **subscribe}))
        # Logs are streamed live only, from whenever the server has subscribed: emit again
        # until something arrives.
        async with asyncio.timeout(30):
            while not done(got):
                await asyncio.to_thread(emit)
                with contextlib.suppress(TimeoutError):
                    while not done(got):
                        got.append(json.loads((await ws.receive(timeout=1)).data))
    return got


def test_outbound_sockets_carry_only_what_the_caller_may_read(
        stack: LocalStack, tokens: dict[str, str]) -> None:
    now = datetime.now(UTC).isoformat()
    flows = {}
    for team in ("team-a-etl", "team-b-ingest"):
        status, flow = stack.prefect.request("GET", f"/flows/name/{team}")
        assert status == 200
        status, run = stack.prefect.request("POST", "/flow_runs/", {"flow_id": flow["id"]})
        assert status == 201, run
        flows[team] = run["id"]
    marker = uuid.uuid4().hex

    def events() -> None:  # team B's first: if it got through, it would arrive first
        status, _ = stack.prefect.request("POST", "/events", [
            {"id": str(uuid.uuid4()), "occurred": now, "event": f"orchgate.probe.{marker}",
             "resource": {"prefect.resource.id": f"prefect.deployment.{stack.deployments[d]}"},
             "payload": {"team": d}} for d in ("team-b-ingest/hourly", "team-a-etl/nightly")])
        assert status == 204

    def logs() -> None:
        status, _ = stack.prefect.request("POST", "/logs/", [
            {"name": "probe", "level": 20, "message": f"{marker} {team}", "timestamp": now,
             "flow_run_id": flows[team]} for team in ("team-b-ingest", "team-a-etl")])
        assert status == 201

    seen = asyncio.run(_listen(
        stack, tokens["amy"], "/events/out",
        {"filter": {"event": {"prefix": [f"orchgate.probe.{marker}"]}}}, events,
        lambda got: any(m.get("type") == "event" for m in got)))
    assert [m["event"]["payload"]["team"] for m in seen if m.get("type") == "event"] == [
        "team-a-etl/nightly"]
    lines = asyncio.run(_listen(
        stack, tokens["amy"], "/logs/out",
        {"filter": {"flow_run_id": {"any_": list(flows.values())}}}, logs,
        lambda got: any(m.get("type") == "log" for m in got)))
    assert [m["log"]["message"] for m in lines if m.get("type") == "log"] == [
        f"{marker} team-a-etl"]

    def dropped(operation: str) -> bool:
        return any(s["dropped_out"] >= 1 for s in _sockets(stack, operation, "amy"))
    _eventually(lambda: dropped("stream_workspace_events_out") and dropped("stream_logs_out"),
                10, "audit records of amy's sockets with dropped frames")
