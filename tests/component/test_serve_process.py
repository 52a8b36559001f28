"""`orchgate serve` as a real process between the fake IdP and the recording upstream:
graceful shutdown on SIGTERM, and `--workers N` with the metrics of every worker and a
listening socket of each worker's own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
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


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def listeners(port: int, pids: set[int]) -> dict[int, set[int]]:
    """Each socket listening on the loopback port (by inode) → which of `pids` hold it."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":  # LISTEN
            inodes.add(int(fields[9]))
    held: dict[int, set[int]] = {inode: set() for inode in inodes}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in (Path("/proc") / str(pid) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inode = int(target[8:-1])
                        if inode in held:
                            held[inode].add(pid)
    return held


def own_sockets(served: Served) -> dict[int, int]:
    """Once two sockets listen on the port: checked to be one per worker, none in the
    supervisor; worker pid → socket inode."""
    supervisor = served.process.pid

    def two() -> dict[int, set[int]] | None:
        held = listeners(served.port, {supervisor} | children(supervisor))
        return held if len(held) == 2 else None
    held = wait_for(two, START_SECONDS * 2, "two sockets listening on the port")
    assert all(len(pids) == 1 and supervisor not in pids for pids in held.values()), held
    owners = {next(iter(pids)): inode for inode, pids in held.items()}
    assert len(owners) == 2, held  # each held by a worker of its own
    return owners


def get_twice(url: str, token: str) -> list[int]:
    """Two calls on one new keep-alive connection; their statuses."""
    parts = url.split("//", 1)[1]
    connection = HTTPConnection(parts, timeout=5.0)
    try:
        statuses = []
        for _ in range(2):
            connection.request("GET", "/airflow/api/v2/dags/team_a_etl", headers=bearer(token))
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        return statuses
    finally:
        connection.close()


def test_each_worker_listens_on_its_own_socket_and_a_dead_workers_socket_goes_with_it(
        idp: FakeIdP, upstream: RecordingUpstream, serve: Callable[..., Served]) -> None:
    served = serve(workers=2)
    token = idp.token("alice", groups=["team-a-deployers"])
    first = own_sockets(served)

    # 32 keep-alive connections opened at once: the kernel spreads them over both sockets
    # (all 32 on one of two sockets: 1 chance in 2**31).
    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda _: get_twice(served.url, token), range(32)))
    assert statuses == [[200, 200]] * 32

    def served_by() -> dict[int, int] | None:  # records are written within a few ms
        counts = {}
        for pid in first:
            trail = served.audit_file.with_name(f"audit.w{pid}.jsonl")
            whole = trail.read_text().split("\n")[:-1]  # not a line still being written
            counts[pid] = sum(1 for line in whole if json.loads(line).get("event") == "request")
        return counts if sum(counts.values()) == 64 else None
    per_worker = wait_for(served_by, what="64 request records")
    assert all(per_worker.values()), per_worker  # both workers served

    # A worker killed: its socket closes with it, so no new connection waits on a socket
    # nobody accepts from — each one is answered (by the other worker) within its timeout.
    dead = min(first)
    os.kill(dead, signal.SIGKILL)
    wait_for(lambda: dead not in children(served.process.pid), what="the worker gone")
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: get_twice(served.url, token), range(16)))
    assert statuses == [[200, 200]] * 16

    # Its replacement listens on a new socket of its own.
    again = own_sockets(served)
    assert dead not in again and len(set(again) & set(first)) == 1
    assert not set(again.values()) & {first[dead]}

    # SIGHUP replaces every worker, each with a new socket, the supervisor keeping none.
    os.kill(served.process.pid, signal.SIGHUP)

    def restarted() -> bool:
        held = listeners(served.port, {served.process.pid} | children(served.process.pid))
        owners = [pid for pids in held.values() for pid in pids]
        return len(held) == 2 and len(set(owners)) == 2 and not set(owners) & set(again)
    wait_for(restarted, START_SECONDS * 2, "both workers replaced")
    assert not set(own_sockets(served).values()) & set(again.values())
    assert [get_twice(served.url, token) for _ in range(4)] == [[200, 200]] * 4

    os.kill(served.process.pid, signal.SIGTERM)
    wait_for(served.refuses, 3.0, "new connections refused")
    assert served.process.wait(START_SECONDS) == 0
