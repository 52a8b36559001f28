"""Acceptance for write-ahead auditing against a real upstream: orchgate killed with SIGKILL
while people create Prefect flow runs through it. Every run the real Prefect server holds
afterwards (its own records: the run's `orchgate.request:` tag) has an intent record, and the
trail verifies, a torn last line reported as such. Its own orchgate process and trail; named
to run after the tests that count team A's runs, and before the secret scan reads its files."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
from devstack import LocalStack
from procs import free_port

from proxy.audit.verify import verify
from proxy.prefect.steps import REQUEST_TAG
from tests.harness import REPO
from tests.integration.support import bearer

OWN = "team-a-etl/nightly"
# Prefect's dev server runs on SQLite: more concurrent writers only get more 503s (locked).
CALLERS, CALLS_EACH = 3, 200  # bounded: at most 600 calls
KILL_AFTER_RUNS = 20  # runs Prefect holds before the kill


def _crash_config(stack: LocalStack) -> tuple[Path, Path, int]:
    """The stack's orchgate configuration, on its own port and with its own trail."""
    port = free_port()
    text = stack.config.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^  port: \d+$", f"  port: {port}", text)
    text = text.replace("file: audit/audit.jsonl",
                        "file: audit-crash/audit.jsonl\n  checkpoint_every: 25")
    assert f"port: {port}" in text and "audit-crash/" in text
    (stack.workdir / "audit-crash").mkdir(exist_ok=True)
    config = stack.workdir / "orchgate-crash.yaml"
    config.write_text(text, encoding="utf-8")
    return config, stack.workdir / "audit-crash" / "audit.jsonl", port


def _marked_runs(stack: LocalStack, marker: str) -> list[dict[str, Any]]:
    """Prefect's own records: every flow run carrying the test's tag."""
    runs: list[dict[str, Any]] = []
    while True:
        status, page = stack.prefect.request("POST", "/flow_runs/filter", {
            "flow_runs": {"tags": {"all_": [marker]}}, "limit": 200, "offset": len(runs)})
        assert status == 200, page
        runs += page
        if len(page) < 200:
            return runs


def _wait(predicate: Any, seconds: float, what: str,
          meanwhile: Any = lambda: "") -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; {meanwhile()}"
        time.sleep(0.2)


def test_kill_9_while_runs_are_created_every_run_prefect_holds_has_its_intent(
        stack: LocalStack, tokens: dict[str, str]) -> None:
    config, trail, port = _crash_config(stack)
    url = f"http://127.0.0.1:{port}"
    marker = f"crash-test-{secrets.token_hex(4)}"
    create = f"/prefect/api/deployments/{stack.deployments[OWN]}/create_flow_run"
    log_path = stack.workdir / "logs" / "orchgate-crash.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config",
                                 str(config)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        stop = threading.Event()
        answers: list[int] = []  # Prefect's, passed through: 201, and 503/502 when SQLite
        # is locked (its server answers 503 or drops the connection)
        try:
            def ready() -> bool:
                try:
                    return httpx2.get(url + "/_orchgate/readyz", timeout=1).status_code == 200
                except httpx2.TransportError:
                    assert proc.poll() is None, "orchgate exited at start"
                    return False
            _wait(ready, 60, "orchgate to be ready")

            async def stream() -> None:
                async with httpx2.AsyncClient(base_url=url, timeout=10,
                                              trust_env=False) as client:
                    async def caller() -> None:
                        for _ in range(CALLS_EACH):
                            if stop.is_set():
                                return
                            try:
                                response = await client.post(
                                    create, json={"tags": [marker]},
                                    headers=bearer(tokens["alice"]))
                            except httpx2.TransportError:
                                return  # killed under it
                            answers.append(response.status_code)
                    await asyncio.gather(*(caller() for _ in range(CALLERS)))
            driver = threading.Thread(target=asyncio.run, args=(stream(),))
            driver.start()
            _wait(lambda: len(_marked_runs(stack, marker)) >= KILL_AFTER_RUNS, 120,
                  f"{KILL_AFTER_RUNS} runs created through orchgate",
                  lambda: f"answers so far: {sorted(Counter(answers).items())}")
            assert driver.is_alive()  # calls are still being made: killed mid-stream
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            stop.set()
            driver.join(60)
            assert not driver.is_alive()
        finally:
            stop.set()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    assert proc.returncode == -signal.SIGKILL
    assert 201 in answers  # runs were created through orchgate, answered as Prefect answers
    runs = _marked_runs(stack, marker)  # what Prefect holds, after the kill
    received = {tag.removeprefix(REQUEST_TAG) for run in runs for tag in run["tags"]
                if tag.startswith(REQUEST_TAG)}
    assert len(received) == len(runs) >= KILL_AFTER_RUNS  # each run names its request
    records = [json.loads(line) for line in trail.read_bytes().splitlines()
               if line.endswith(b"}")]  # a torn last line is verify's to report
    intents = {r["request_id"] for r in records if r.get("event") == "intent"}
    assert received <= intents, sorted(received - intents)
    answered = {r["request_id"] for r in records if r.get("event") == "request"}
    assert len(answered) >= 1  # outcomes were written too, after their answers

    report = verify([trail], _public_key(stack))
    assert report.ok, report.render()
    assert report.checkpoints >= 1
    done = subprocess.run([sys.executable, "-m", "proxy", "audit", "verify", str(trail)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "OK: the chain is intact" in done.stdout
    if report.torn:  # the kill cut a write: reported as a torn tail, not as tampering
        assert "torn" in done.stdout
    print(f"answers before the kill: {sorted(Counter(answers).items())}; runs in Prefect: "
          f"{len(runs)}; intents: {len(intents)}")
    print(done.stdout)

    for run in runs:  # leave team A's deployment as the other tests found it
        stack.prefect.request("DELETE", f"/flow_runs/{run['id']}")


def _public_key(stack: LocalStack) -> Any:
    from proxy.audit.chain import load_public_key

    return load_public_key(stack.workdir / "secrets" / "audit-checkpoint.key")
