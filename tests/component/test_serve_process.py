"""`orchgate serve` as a real process between the fake IdP and the recording upstream:
graceful shutdown on SIGTERM, and `--workers N` with the metrics of every worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import (
    LOOPBACK,
    START_SECONDS,
    FakeIdP,
    Orchgate,
    RecordingUpstream,
    Stream,
    bearer,
    loopback_socket,
    wait_for,
)

WAIT = "/api/v2/dags/team_a_etl/dagRuns/r1/wait"


def free_port() -> int:
    with loopback_socket() as sock:
        return int(sock.getsockname()[1])


class Served:
    def __init__(self, base: Path, idp: FakeIdP, upstream: RecordingUpstream,
                 workers: int = 1) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        # The harness writes the credentials and builds the mapping; the process reads it.
        gate = Orchgate(base, idp, upstream, overrides={
            "listen": {"port": self.port},
            "metrics": {"host": LOOPBACK, "port": self.metrics_port}})
        self.audit_file = gate.audit_file
        config = base / "orchgate.yaml"
        config.write_text(yaml.safe_dump(gate.mapping), encoding="utf-8")
        self.log = (base / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config),
             "--workers", str(workers)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://{LOOPBACK}:{self.port}"

    def ready(self) -> None:
        def live() -> bool:
            assert self.process.poll() is None, "orchgate serve exited"
            try:
                return httpx2.get(self.url + "/_orchgate/livez", timeout=1.0,
                                  trust_env=False).status_code == 200
            except httpx2.TransportError:
                return False
        wait_for(live, START_SECONDS * 2, "orchgate serve start-up", interval=0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(START_SECONDS)
        self.log.close()

    def refuses(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1.0):
                return False
        except ConnectionRefusedError:
            return True


@pytest.fixture
def serve(tmp_path: Path, idp: FakeIdP, upstream: RecordingUpstream
          ) -> Iterator[Callable[..., Served]]:
    """Start `orchgate serve` (keyword: workers) and wait until it answers."""
    started: list[Served] = []

    def start(workers: int = 1) -> Served:
        served = Served(tmp_path / f"serve-{len(started)}", idp, upstream, workers)
        started.append(served)
        served.ready()
        return served

    yield start
    for served in started:
        served.stop()


def audit_verifies(audit_file: Path) -> str:
    verify = subprocess.run([sys.executable, "-m", "proxy", "audit", "verify", str(audit_file)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return verify.stdout


def test_sigterm_drains_streams_refuses_new_connections_and_seals_the_audit(
        idp: FakeIdP, upstream: RecordingUpstream, serve: Callable[..., Served]) -> None:
    lines = [json.dumps({"state": s, "i": i}).encode() + b"\n"
             for i, s in enumerate(("queued", "running", "running", "running", "success"))]
    upstream.on("GET", WAIT, lambda _: Stream(lines, interval=0.4))  # ~1.6 s each
    served = serve()
    token = idp.token("alice", groups=["team-a-deployers"])
    results: list[tuple[int, list[str]]] = []

    def stream() -> None:
        with httpx2.Client(base_url=served.url, timeout=10.0, trust_env=False) as client, \
                client.stream("GET", "/airflow" + WAIT, headers=bearer(token)) as response:
            results.append((response.status_code, list(response.iter_lines())))

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(upstream.requests(WAIT)) == 3, what="three streams upstream")
    os.kill(served.process.pid, signal.SIGTERM)

    wait_for(served.refuses, 3.0, "new connections refused")
    for thread in threads:
        thread.join(START_SECONDS)
    # After its graceful shutdown uvicorn raises the signal it caught again: killed by SIGTERM.
    assert served.process.wait(START_SECONDS) == -signal.SIGTERM
    expected = [line.decode().strip() for line in lines]
    assert results == [(200, expected)] * 3  # every stream whole, within the deadline

    out = audit_verifies(served.audit_file)
    assert out
    records = [json.loads(line) for line in served.audit_file.read_text().splitlines()]
    streamed = [r for r in records if r.get("event") == "request" and r.get("status") == 200]
    assert len(streamed) == 3
    assert all(r["bytes_out"] == sum(map(len, lines)) for r in streamed)


def test_workers_share_one_metrics_endpoint(
        idp: FakeIdP, upstream: RecordingUpstream, serve: Callable[..., Served]) -> None:
    served = serve(workers=2)
    token = idp.token("alice", groups=["team-a-deployers"])
    for _ in range(12):  # new connections: the kernel spreads them over the workers
        with httpx2.Client(base_url=served.url, timeout=10.0, trust_env=False) as client:
            response = client.get("/airflow/api/v2/dags/team_a_etl", headers=bearer(token))
            assert response.status_code == 200
    text = httpx2.get(f"http://{LOOPBACK}:{served.metrics_port}/metrics", timeout=5.0,
                      trust_env=False).text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    requests = [s for s in samples if s.name == "orchgate_requests_total"
                and s.labels == {"system": "airflow", "action": "read", "decision": "allow",
                                 "status": "200"}]
    assert len(requests) == 1 and requests[0].value == 12  # summed over the workers
    generation = [s for s in samples if s.name == "orchgate_policy_generation"]
    assert [(g.labels, g.value) for g in generation] == [({"policy": "policy"}, 1.0)]

    os.kill(served.process.pid, signal.SIGTERM)
    wait_for(served.refuses, 3.0, "new connections refused")
    assert served.process.wait(START_SECONDS) == 0
    trails = sorted(served.audit_file.parent.glob("audit.w*.jsonl"))  # one chain per worker
    assert len(trails) == 2
    for trail in trails:
        audit_verifies(trail)
    served_by = [json.loads(line) for trail in trails for line in trail.read_text().splitlines()]
    assert len([r for r in served_by if r.get("event") == "request"]) == 12
