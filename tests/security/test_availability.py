"""Availability under attack: JWKS floods, an IdP or upstream that is down or slow, slow
bodies, and a policy change that must not leave a stale decision behind. Each test starts the
orchgate it needs (tests/harness.py) and bounds every wait."""

from __future__ import annotations

import secrets
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2

from tests.harness import (
    POLICIES,
    FakeIdP,
    Orchgate,
    RecordingUpstream,
    Reply,
    bearer,
    refused_port,
    wait_for,
)
from tests.security.kit import DAG, DEPLOYERS, SECURITY_LIMITS

PROBLEM = "urn:orchgate:problem:"
API = "/api/v2/dags/team_a_etl"


def gate_for(workdir: Path, idp: FakeIdP, upstream: RecordingUpstream, **kwargs: Any
             ) -> Orchgate:
    overrides = {"limits": SECURITY_LIMITS, **kwargs.pop("overrides", {})}
    return Orchgate(workdir, idp, upstream, overrides=overrides, **kwargs).start()


def forwarded(upstream: RecordingUpstream) -> list[str]:
    upstream.wait_idle()
    return [r.target for r in upstream.requests() if "health" not in r.path]


def problem_of(response: httpx2.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    slug: str = response.json()["type"].removeprefix(PROBLEM)
    return slug


def readyz(gate: Orchgate) -> dict[str, Any]:
    with gate.client() as client:
        body: dict[str, Any] = client.get("/_orchgate/readyz").json()
    return body


def test_unknown_kid_flood_fetches_the_jwks_at_most_once_per_cooldown(
        workdir: Path, upstream: RecordingUpstream) -> None:
    with FakeIdP() as idp:
        gate = gate_for(workdir, idp, upstream)
        try:
            fetches = idp.requests.count("/jwks")  # the start-up fetch
            forged = []
            for _ in range(60):
                claims = idp.claims("alice", groups=DEPLOYERS)
                forged.append(idp.sign(claims, kid="k-" + secrets.token_hex(6),
                                       key_of=idp.kid))
            with ThreadPoolExecutor(12) as pool, gate.client() as client:
                answers = list(pool.map(
                    lambda t: client.get(DAG, headers=bearer(t)), forged))
            assert {a.status_code for a in answers} == {401}
            assert idp.requests.count("/jwks") - fetches <= 1  # one refetch, single flight
            assert forwarded(upstream) == []
            records = gate.audit_records()
            assert sum(1 for r in records if r["status"] == 401) == 60
            # Still serving: a valid token passes, and the proxy is ready.
            with gate.client() as client:
                assert client.get(DAG, headers=bearer(idp.token("alice", groups=DEPLOYERS))
                                  ).status_code == 200
            assert readyz(gate)["status"] == "ready"
        finally:
            gate.stop()


def test_idp_down_cached_keys_keep_working_and_new_keys_fail_closed(
        workdir: Path, upstream: RecordingUpstream) -> None:
    idp = FakeIdP().start()
    gate = gate_for(workdir, idp, upstream)
    try:
        known = idp.token("alice", groups=DEPLOYERS)
        rotated_kid = idp.add_key()  # published after orchgate fetched the set
        rotated = idp.sign(idp.claims("alice", groups=DEPLOYERS), kid=rotated_kid)
        idp.stop()
        with gate.client() as client:
            ok = client.get(DAG, headers=bearer(known))
            assert ok.status_code == 200
            refused = client.get(DAG, headers=bearer(rotated))
            assert refused.status_code == 401
            assert problem_of(refused) == "unauthorized"
        assert forwarded(upstream) == [API]  # the known key's request only
        assert gate.audit_record(refused.headers["x-request-id"])["upstream_status"] is None
        assert readyz(gate)["status"] == "ready"  # keys within max-stale
    finally:
        gate.stop()


def test_issuer_whose_keys_were_never_loaded_fails_closed(
        workdir: Path, idp: FakeIdP, upstream: RecordingUpstream) -> None:
    with refused_port() as port:
        down = f"http://127.0.0.1:{port}"
        gate = gate_for(workdir, idp, upstream, overrides={"issuers": [
            {"issuer": idp.issuer, "audiences": ["orchgate"]},
            {"issuer": down, "audiences": ["orchgate"]}]})
        try:
            token = idp.sign({**idp.claims("alice", groups=DEPLOYERS), "iss": down})
            with gate.client() as client:
                answer = client.get(DAG, headers=bearer(token))
                good = client.get(DAG, headers=bearer(idp.token("alice", groups=DEPLOYERS)))
            assert answer.status_code == 503
            assert problem_of(answer) == "keys-unavailable"
            assert good.status_code == 200  # the other issuer is unaffected
            assert forwarded(upstream) == [API]
            record = gate.audit_record(answer.headers["x-request-id"])
            assert (record["status"], record["upstream_status"]) == (503, None)
            ready = readyz(gate)
            assert ready["status"] == "not ready"  # and says why: that issuer has no keys
            assert ready["checks"]["keys"]["issuers"][down]["usable"] is False
        finally:
            gate.stop()


def test_upstream_down_is_502_at_once(workdir: Path, idp: FakeIdP,
                                      upstream: RecordingUpstream) -> None:
    with refused_port() as port:
        gate = gate_for(workdir, idp, upstream, airflow_url=f"http://127.0.0.1:{port}")
        try:
            started = time.monotonic()
            with gate.client() as client:
                answer = client.get(DAG, headers=bearer(idp.token("alice", groups=DEPLOYERS)))
            assert answer.status_code == 502
            assert time.monotonic() - started < 2
            assert problem_of(answer) == "upstream-unreachable"
            record = gate.audit_record(answer.headers["x-request-id"])
            assert (record["status"], record["upstream_status"]) == (502, None)
            ready = readyz(gate)
            assert ready["checks"]["airflow"]["ready"] is False
            assert ready["checks"]["prefect"]["ready"] is True
        finally:
            gate.stop()


def test_slow_upstream_is_504_within_the_read_timeout(
        workdir: Path, idp: FakeIdP, upstream: RecordingUpstream) -> None:
    upstream.on("GET", API, Reply({"late": True}, delay=8))
    gate = gate_for(workdir, idp, upstream)
    try:
        started = time.monotonic()
        with gate.client() as client:
            answer = client.get(DAG, headers=bearer(idp.token("alice", groups=DEPLOYERS)))
        took = time.monotonic() - started
        assert answer.status_code == 504
        assert SECURITY_LIMITS["read_timeout_seconds"] <= took < 5
        assert problem_of(answer) == "upstream-timeout"
        assert forwarded(upstream) == [API]
        record = gate.audit_record(answer.headers["x-request-id"])
        assert record["status"] == 504
        assert readyz(gate)["status"] == "ready"
    finally:
        gate.stop()


def slow_body(gate: Orchgate, token: str, path: str, sent: bytes, declared: int,
              content_type: str = "application/json") -> tuple[bytes, float]:
    """Send the head and the first bytes of a body, then nothing: what comes back, when."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {declared}\r\n\r\n").encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gate.port), timeout=8) as sock:
        sock.sendall(head + sent)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, time.monotonic() - started


def test_slowloris_bodies_are_cut_at_the_body_timeout(
        workdir: Path, idp: FakeIdP, upstream: RecordingUpstream) -> None:
    gate = gate_for(workdir, idp, upstream)
    token = idp.token("alice", groups=DEPLOYERS)
    try:
        # Streamed to the upstream (trigger): the upstream gets a broken body, never a whole one.
        answer, took = slow_body(gate, token, DAG + "/dagRuns", b'{"logical', 1000)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert took < SECURITY_LIMITS["body_timeout_seconds"] + 3
        upstream.wait_idle()
        assert all(not r.complete for r in upstream.requests(API + "/dagRuns"))
        # Buffered for authorization (a Prefect flow's name): nothing reaches the upstream.
        answer, took = slow_body(gate, token, "/prefect/api/flows/", b'{"name"', 1000)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert took < SECURITY_LIMITS["body_timeout_seconds"] + 3
        assert upstream.requests("/api/flows/") == []
        timeouts = wait_for(lambda: [r for r in gate.audit_records()
                                     if r["problem"] == "body-timeout"][1:] and
                            [r for r in gate.audit_records() if r["problem"] == "body-timeout"],
                            what="two body-timeout audit records")
        assert [(r["status"], r["upstream_status"]) for r in timeouts] in (
            [(408, None), (408, None)], [(408, 200), (408, None)])
        with gate.client() as client:  # and the proxy still serves
            assert client.get(DAG, headers=bearer(token)).status_code == 200
        assert readyz(gate)["status"] == "ready"
    finally:
        gate.stop()


def test_policy_change_leaves_no_stale_decision(
        workdir: Path, idp: FakeIdP, upstream: RecordingUpstream) -> None:
    policies = workdir / "policies"
    shutil.copytree(POLICIES, policies)
    gate = gate_for(workdir / "gate", idp, upstream, overrides={"policy": {
        "model": str(policies / "model.conf"), "files": [str(policies / "policy.csv")]}})
    token = idp.token("alice", groups=DEPLOYERS)  # the token keeps its group claim
    try:
        with gate.client() as client:
            assert client.get(DAG, headers=bearer(token)).status_code == 200
            generation = readyz(gate)["checks"]["policy"]["generation"]
            csv = policies / "policy.csv"
            csv.write_text(csv.read_text(encoding="utf-8").replace(
                "g, group:team-a-deployers, role:team-a-deployer\n", "")
                .replace("p, group:team-a-deployers, *, team:shared, read, allow\n", ""),
                encoding="utf-8")
            deadline = time.monotonic() + 10
            while readyz(gate)["checks"]["policy"]["generation"] == generation:
                assert time.monotonic() < deadline, "the policy change was not picked up"
                time.sleep(0.1)
            after = client.get(DAG, headers=bearer(token))
        assert after.status_code == 403
        assert problem_of(after) == "forbidden"
        assert forwarded(upstream) == [API]  # the first request only
        record = gate.audit_record(after.headers["x-request-id"])
        assert (record["decision"], record["upstream_status"]) == ("deny", None)
        assert record["policy_generation"] > generation
        assert readyz(gate)["status"] == "ready"
    finally:
        gate.stop()
