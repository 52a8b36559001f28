"""The audit trail on the request path: write-ahead intents, failing sinks, lineage, a crash.

Personas follow policies/policy.csv: `alice` deploys team A's workflows, `ci-team-a` is team
A's CI service account (deploys, and so reads, team A's workflows).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import websockets.sync.client
import yaml
from websockets.typing import Subprotocol

from proxy.audit import sinks
from proxy.audit.chain import generate_key, load_public_key
from proxy.audit.verify import verify
from tests.harness import (
    REPO,
    FakeIdP,
    Orchgate,
    RecordingUpstream,
    Reply,
    StartOrchgate,
    bearer,
    loopback_socket,
    wait_for,
)

TRIGGER = "/airflow/api/v2/dags/team_a_etl/dagRuns"
UPSTREAM_TRIGGER = "/api/v2/dags/team_a_etl/dagRuns"
PARENT = "x-orchgate-parent-run"
FLOW_RUN = "2f9a2f43-7f3c-4a49-9a8c-0d6c1c1e0b11"


def alice(idp: FakeIdP) -> str:
    return idp.token("alice", groups=["team-a-deployers"])


def ci(idp: FakeIdP) -> str:
    return idp.token("ci-team-a", client_id="ci-team-a")


def trail_of(gate: Orchgate, request_id: str) -> list[dict[str, Any]]:
    return [r for r in gate.audit_trail() if r.get("request_id") == request_id]


def test_a_run_is_recorded_as_intent_before_it_is_forwarded_and_outcome_after(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate()
    seen_intent: list[bool] = []

    def answer(received: Any) -> Reply:
        # The upstream has the call: its intent must already be in the file.
        request_id = received.header("x-request-id")
        seen_intent.append(any(r["event"] == "intent" for r in trail_of(gate, request_id)))
        return Reply({"dag_id": "team_a_etl", "dag_run_id": "manual__1"})
    upstream.on("POST", UPSTREAM_TRIGGER, answer)

    with gate.client() as client:
        response = client.post(TRIGGER, json={"logical_date": None},
                               headers=bearer(alice(idp)))

    assert response.status_code == 200, response.text
    assert seen_intent == [True]
    intent, outcome = trail_of(gate, response.headers["x-request-id"])
    assert intent["event"] == "intent" and outcome["event"] == "request"
    assert outcome["intent_seq"] == intent["seq"] < outcome["seq"]
    assert intent["action"] == "run" and intent["decision"] == "allow"
    assert intent["rule"] and intent["policy_hash"] and "status" not in intent
    assert outcome["created"] == {"runs": [{"system": "airflow", "kind": "dag_run",
                                            "id": "team_a_etl/manual__1"}]}
    assert outcome["upstream_status"] == 200 and outcome["latency_ms"] > 0


def test_reads_write_no_intent_and_denials_and_401s_are_recorded(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate()
    with gate.client() as client:
        read = client.get("/airflow/api/v2/dags/team_a_etl", headers=bearer(alice(idp)))
        denied = client.post("/airflow/api/v2/dags/team_b_ingest/dagRuns",
                             json={"logical_date": None}, headers=bearer(alice(idp)))
        anonymous = client.get("/airflow/api/v2/dags/team_a_etl")

    assert [r["event"] for r in trail_of(gate, read.headers["x-request-id"])] == ["request"]
    [deny] = trail_of(gate, denied.headers["x-request-id"])
    assert denied.status_code == 403
    assert deny["decision"] == "deny" and deny["status"] == 403 and deny["reason"]
    [unauthenticated] = trail_of(gate, anonymous.headers["x-request-id"])
    assert unauthenticated["status"] == 401 and unauthenticated["principal"] is None
    assert unauthenticated["problem"] == "unauthorized"


def test_when_the_trail_cannot_write_runs_get_503_and_reads_are_served(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate(overrides={"audit": {"file": "/dev/full"}})
    with gate.client() as client:
        run = client.post(TRIGGER, json={"logical_date": None}, headers=bearer(alice(idp)))
        read = client.get("/airflow/api/v2/dags/team_a_etl", headers=bearer(alice(idp)))
        # The start record and the intent failed at once; the two outcome records fail when
        # their write comes due (audit/sinks.py, OUTCOME_DELAY): asked again until then.
        deadline = time.monotonic() + 5
        while True:
            ready = client.get("/_orchgate/readyz")
            audit = ready.json()["checks"]["audit"]
            if audit["failures"] >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.01)

    assert run.status_code == 503, run.text
    assert run.json()["type"] == "urn:orchgate:problem:audit-unavailable"
    assert upstream.requests(UPSTREAM_TRIGGER) == []  # never forwarded
    assert read.status_code == 200
    assert ready.status_code == 503 and not audit["ready"] and audit["failures"] == 4


def test_outcome_records_are_sealed_when_nothing_else_is_under_way_and_written_later(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # An answered request's record is built and sealed in the loop's next turn when no other
    # request is under way (pipeline.py; an open socket does not count), and written when its
    # write comes due; while another request is under way it waits unsealed, and both are
    # sealed when that one ends.
    monkeypatch.setattr(sinks, "OUTCOME_DELAY", 6.0)  # writes come due long after the checks
    upstream.on("GET", "/api/v2/dags/team_a_etl/dagRuns", Reply({"dag_runs": []}, delay=2.5))
    gate = start_orchgate()
    token = alice(idp)
    def on_file(response: httpx2.Response) -> bool:  # read as it is (audit_trail flushes)
        return response.headers["x-request-id"] in gate.audit_file.read_text(encoding="utf-8")

    upstream.prefect_socket("/api/events/in", gate.prefect_auth)
    with gate.client() as client, websockets.sync.client.connect(  # a socket stays open
            gate.ws_url("/prefect/api/events/in"), subprotocols=[Subprotocol("prefect")],
            additional_headers=bearer(token), open_timeout=5, close_timeout=5) as socket:
        socket.send(json.dumps({"type": "auth", "token": None}))
        assert json.loads(socket.recv(timeout=5)) == {"type": "auth_success"}

        def seq() -> int:
            return int(client.get("/_orchgate/readyz").json()["checks"]["audit"]["seq"])

        before = seq()
        alone = client.get("/airflow/api/v2/dags/team_a_etl", headers=bearer(token))
        wait_for(lambda: seq() == before + 1, 2, "the record sealed")
        assert not on_file(alone)  # sealed, not yet written

        slow: list[httpx2.Response] = []
        thread = threading.Thread(target=lambda: slow.append(client.get(
            "/airflow/api/v2/dags/team_a_etl/dagRuns", headers=bearer(token))))
        thread.start()
        wait_for(lambda: upstream.requests("/api/v2/dags/team_a_etl/dagRuns"), 5,
                 "the slow request forwarded")
        meanwhile = client.get("/airflow/api/v2/dags/team_a_etl", headers=bearer(token))
        unsealed = []
        for _ in range(5):
            time.sleep(0.05)
            unsealed.append(seq())
        thread.join(10)
        wait_for(lambda: seq() == before + 3, 2, "both records sealed")
        assert not on_file(meanwhile)

        assert alone.status_code == meanwhile.status_code == slow[0].status_code == 200
        assert unsealed == [before + 1] * 5  # waiting, unsealed, while the slow one ran
        wait_for(lambda: on_file(slow[0]), 10, "the write")
        assert on_file(alone) and on_file(meanwhile)
    mine = [alone.headers["x-request-id"], meanwhile.headers["x-request-id"],
            slow[0].headers["x-request-id"]]
    assert [r["request_id"] for r in gate.audit_trail() if r.get("request_id") in mine] == mine


def test_reads_can_be_refused_too_when_the_trail_fails(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate(overrides={"audit": {"file": "/dev/full",
                                               "reads_on_failure": "refuse"}})
    with gate.client() as client:
        read = client.get("/airflow/api/v2/dags/team_a_etl", headers=bearer(alice(idp)))

    assert read.status_code == 503
    assert upstream.requests() == []


# -- lineage ---------------------------------------------------------------------------------


def prefect_parent(upstream: RecordingUpstream, flow: str = "team-a-bridge") -> None:
    upstream.on("GET", f"/api/flow_runs/{FLOW_RUN}",
                Reply({"id": FLOW_RUN, "flow_id": "7d0c7f0e-5b0a-4a52-8e55-3f0a8f0a0a01",
                       "deployment_id": None}))
    upstream.on("GET", "/api/flows/7d0c7f0e-5b0a-4a52-8e55-3f0a8f0a0a01",
                Reply({"id": "7d0c7f0e-5b0a-4a52-8e55-3f0a8f0a0a01", "name": flow}))


def test_a_service_account_names_its_parent_run_recorded_and_stamped(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate()
    prefect_parent(upstream)
    upstream.on("POST", UPSTREAM_TRIGGER,
                Reply({"dag_id": "team_a_etl", "dag_run_id": "manual__2"}))
    with gate.client() as client:
        response = client.post(TRIGGER, json={"logical_date": None},
                               headers={**bearer(ci(idp)), PARENT: f"prefect:{FLOW_RUN}"})

    assert response.status_code == 200, response.text
    [seen] = upstream.requests(UPSTREAM_TRIGGER)
    assert f"Parent run: prefect:{FLOW_RUN}" in json.loads(seen.body)["note"]
    assert seen.header(PARENT) is None  # never forwarded
    record = gate.audit_record(response.headers["x-request-id"])
    assert record["parent"] == {"run": f"prefect:{FLOW_RUN}", "system": "prefect",
                                "workflow": "team-a-bridge/-"}


def test_a_parent_on_a_prefect_run_becomes_a_tag(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate()
    prefect_parent(upstream)
    upstream.on("POST", "/api/flows/", Reply({"id": "x", "name": "team-a-child"}))
    body = {"flow_id": "7d0c7f0e-5b0a-4a52-8e55-3f0a8f0a0a01", "tags": ["mine"]}
    with gate.client() as client:
        response = client.post("/prefect/api/flow_runs/", json=body,
                               headers={**bearer(ci(idp)), PARENT: f"prefect:{FLOW_RUN}"})

    assert response.status_code == 200, response.text
    [seen] = upstream.requests("/api/flow_runs/", "POST")
    tags = json.loads(seen.body)["tags"]
    assert "mine" in tags and f"orchgate.parent:prefect:{FLOW_RUN}" in tags


def test_a_humans_parent_header_is_dropped(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate()
    with gate.client() as client:
        response = client.post(TRIGGER, json={"logical_date": None},
                               headers={**bearer(alice(idp)), PARENT: f"prefect:{FLOW_RUN}"})

    assert response.status_code == 200
    [seen] = upstream.requests(UPSTREAM_TRIGGER)
    assert "Parent run" not in json.loads(seen.body)["note"]
    assert upstream.requests(f"/api/flow_runs/{FLOW_RUN}") == []  # not even looked up
    record = gate.audit_record(response.headers["x-request-id"])
    assert record["parent"] is None and record["notes"]["parent_dropped"]


def test_a_parent_that_does_not_exist_or_cannot_be_read_is_refused(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate()
    prefect_parent(upstream, flow="team-b-secret")  # team B's: ci-team-a may not read it
    upstream.on("GET", "/api/v2/dags/team_a_etl/dagRuns/gone",
                Reply({"detail": "not found"}, status=404))
    with gate.client() as client:
        forbidden = client.post(TRIGGER, json={"logical_date": None},
                                headers={**bearer(ci(idp)), PARENT: f"prefect:{FLOW_RUN}"})
        missing = client.post(TRIGGER, json={"logical_date": None},
                              headers={**bearer(ci(idp)), PARENT: "airflow:team_a_etl/gone"})
        malformed = client.post(TRIGGER, json={"logical_date": None},
                                headers={**bearer(ci(idp)), PARENT: "prefect:../x"})

    assert forbidden.status_code == 403
    assert forbidden.json()["type"].endswith("parent-run-forbidden")
    assert missing.status_code == 400
    assert missing.json()["type"].endswith("parent-run-not-found")
    assert malformed.status_code == 400
    assert upstream.requests(UPSTREAM_TRIGGER) == []


# -- a crash ---------------------------------------------------------------------------------


def test_kill_9_mid_stream_every_forwarded_call_has_its_intent_and_the_chain_verifies(
        tmp_path: Path, idp: FakeIdP, upstream: RecordingUpstream) -> None:
    """orchgate as its own process, killed with SIGKILL while mutating calls stream in."""
    key = tmp_path / "checkpoint.key"
    generate_key(key)
    sock = loopback_socket()
    port = sock.getsockname()[1]
    sock.close()
    gate = Orchgate(tmp_path / "gate", idp, upstream, overrides={
        "listen": {"port": port},
        "audit": {"checkpoint_key_file": str(key), "checkpoint_every": 25}})
    config = tmp_path / "gate" / "orchgate.yaml"
    config.write_text(yaml.safe_dump(gate.mapping), encoding="utf-8")
    upstream.on("POST", UPSTREAM_TRIGGER,
                Reply({"dag_id": "team_a_etl", "dag_run_id": "r"}, delay=0.02))
    log = (tmp_path / "orchgate.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def up() -> bool | None:
            try:
                return httpx2.get(f"http://127.0.0.1:{port}/_orchgate/livez",
                                  timeout=1).status_code == 200 or None
            except httpx2.TransportError:
                return None
        wait_for(up, 20, "orchgate process start")
        token = alice(idp)
        stop = threading.Event()

        async def stream() -> None:
            async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                          timeout=5, trust_env=False) as client:
                async def caller() -> None:
                    for _ in range(200):  # bounded
                        if stop.is_set():
                            return
                        try:
                            await client.post(TRIGGER, json={"logical_date": None},
                                              headers=bearer(token))
                        except httpx2.TransportError:
                            return
                await asyncio.gather(*(caller() for _ in range(8)))
        driver = threading.Thread(target=asyncio.run, args=(stream(),))
        driver.start()
        wait_for(lambda: len(upstream.requests(UPSTREAM_TRIGGER)) >= 60 or None, 30,
                 "calls reaching the upstream")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        driver.join(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()

    received = {r.header("x-request-id") for r in upstream.requests(UPSTREAM_TRIGGER)}
    trail = [json.loads(line) for line in
             (tmp_path / "gate" / "audit.jsonl").read_bytes().splitlines()
             if line.endswith(b"}")]
    intents = {r["request_id"] for r in trail if r.get("event") == "intent"}
    assert len(received) >= 60
    assert received <= intents, received - intents
    report = verify([tmp_path / "gate" / "audit.jsonl"], load_public_key(key))
    assert report.ok, report.render()
    assert report.checkpoints >= 2
    print(report.render())  # torn tail (if the kill cut a write) and calls in flight
