"""Hostile input against the real stack: dev IdP, Airflow 3.3.2, Prefect 3.9.1, orchgate.

A subset of tests/security's table sent as raw bytes to the real orchgate, and schema-driven
probing: schemathesis generates requests from the upstreams' own OpenAPI documents and sends
them through orchgate, as the admin persona and unauthenticated. For every answer, the audit
trail must show that orchgate itself never answered 5xx, never forwarded an unauthenticated
request, and forwarded only what it had authorized.

The probe sends reads (GET) only: the stack is shared with the other integration tests, and a
generated write (say `PATCH /dags?dag_id_pattern=~`) would change what they rely on. Writes are
covered by tests/security against the recording upstream.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
import requests
import schemathesis
from devstack import LocalStack
from hypothesis import HealthCheck, given, settings

from tests.integration.support import bearer

DAG = "/airflow/api/v2/dags/team_a_etl"
TRIGGER = b'{"logical_date": null}'
EXAMPLES_PER_OPERATION = 3


def exchange(stack: LocalStack, data: bytes) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(stack.orchgate_url)
    assert parts.hostname == "127.0.0.1" and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(data)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.decode().strip().lower(): v.decode().strip()
               for k, _, v in (line.partition(b":") for line in lines[1:])}
    return int(lines[0].split(b" ")[1]), headers, body


def raw_get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def audit(stack: LocalStack) -> list[dict[str, Any]]:
    """The audit records; a last line still being written is read again a moment later."""
    for _ in range(100):
        try:
            return stack.audit_records()
        except json.JSONDecodeError:
            time.sleep(0.05)
    raise AssertionError("the audit file kept ending in a partial line")


def forge_none(token: str) -> str:
    _, claims, _ = token.split(".")
    none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    return f"{none}.{claims}."


def assert_ready(stack: LocalStack) -> None:
    with httpx2.Client(base_url=stack.orchgate_url, timeout=30, trust_env=False) as client:
        ready = client.get("/_orchgate/readyz")
    assert ready.status_code == 200, ready.text


REAL_CASES: dict[str, tuple[Any, int]] = {
    "no-token": (lambda t: raw_get(DAG), 401),
    "alg-none": (lambda t: raw_get(DAG, f"Authorization: Bearer {forge_none(t['carol'])}"),
                 401),
    "tampered": (lambda t: raw_get(DAG, f"Authorization: Bearer {t['dave'][:-4]}AAAA"), 401),
    "two-authorizations": (lambda t: raw_get(DAG, f"Authorization: Bearer {t['amy']}",
                                             f"Authorization: Bearer {t['carol']}"), 400),
    "dotdot-encoded": (lambda t: raw_get("/airflow/api/v2/dags/team_b_ingest/%2e%2e/team_a_etl",
                                         f"Authorization: Bearer {t['amy']}"), 400),
    "encoded-prefix": (lambda t: raw_get("/%61irflow/api/v2/dags/team_a_etl",
                                         f"Authorization: Bearer {t['amy']}"), 400),
    "spoofed-identity-headers": (lambda t: raw_get(
        "/airflow/api/v2/dags/team_b_ingest", f"Authorization: Bearer {t['dave']}",
        "X-Forwarded-User: carol", "Remote-User: carol", "X-Orchgate-User: carol"), 403),
    "reader-cannot-trigger": (lambda t: (
        "POST /airflow/api/v2/dags/team_a_etl/dagRuns HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {t['amy']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(TRIGGER)}\r\nConnection: close\r\n\r\n").encode() + TRIGGER,
        403),
    "prefect-not-a-uuid": (lambda t: raw_get("/prefect/api/flows/%2e%2e",
                                             f"Authorization: Bearer {t['carol']}"), 400),
}


@pytest.mark.parametrize("name", sorted(REAL_CASES))
def test_hostile_request_against_the_real_stack(stack: LocalStack, tokens: dict[str, str],
                                                name: str) -> None:
    build, expected = REAL_CASES[name]
    status, headers, body = exchange(stack, build(tokens))
    assert status == expected, body[:300]
    record = stack.audit_record(headers["x-request-id"], timeout=10)
    assert (record["status"], record["upstream_status"]) == (expected, None)  # never forwarded
    text = json.dumps(record) + body.decode("latin-1")
    assert not any(token in text for token in tokens.values())
    assert_ready(stack)


def _spec(url: str, headers: dict[str, str]) -> dict[str, Any]:
    with httpx2.Client(timeout=60, trust_env=False) as client:
        response = client.get(url, headers=headers)
    assert response.status_code == 200, response.text[:300]
    spec: dict[str, Any] = response.json()
    return spec


@pytest.mark.parametrize("system", ["airflow", "prefect"])
def test_schema_driven_probe_through_orchgate(stack: LocalStack, tokens: dict[str, str],
                                              system: str) -> None:
    if system == "airflow":
        spec = _spec(stack.airflow.url + "/openapi.json", {})
        base = stack.orchgate_url + "/airflow"
    else:
        basic = base64.b64encode(stack.prefect.auth_string.encode()).decode()
        spec = _spec(stack.prefect.api + "/openapi.json", {"Authorization": f"Basic {basic}"})
        # Its OpenAPI paths are relative to the API root, or include it: either way, the same.
        rooted = any(path.startswith("/api/") for path in spec["paths"])
        base = stack.orchgate_url + ("/prefect" if rooted else "/prefect/api")
    schema = schemathesis.openapi.from_dict(spec)
    results: list[Any] = list(schema.get_all_operations())
    operations = [r.ok() for r in results if r.ok().method == "get"]
    assert len(operations) >= 20
    session = requests.Session()
    session.trust_env = False  # loopback only, never an environment proxy
    sent: list[tuple[str, bool, int]] = []
    admin = bearer(tokens["carol"])

    for op in operations:
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(op.as_strategy())
        def probe(case: Any) -> None:
            authed = len(sent) % 4 != 0  # every fourth request without a token
            response = case.call(base_url=base, session=session,
                                 headers=admin if authed else {}, timeout=30,
                                 allow_redirects=False)
            request_id = response.headers.get("x-request-id")
            if isinstance(request_id, list):  # schemathesis' Response: every value a list
                [request_id] = request_id
            assert request_id, (case.method, case.formatted_path, response.status_code)
            sent.append((request_id, authed, response.status_code))

        probe()

    assert len(sent) >= 100
    records: dict[str, dict[str, Any]] = {str(r["request_id"]): r for r in audit(stack)}
    for request_id, authed, status in sent:
        record = records.get(request_id) or stack.audit_record(request_id, timeout=10)
        assert record["status"] == status
        forwarded = record["upstream_status"] is not None
        # orchgate itself never answers 5xx: any 5xx is the upstream's own answer.
        assert status < 500 or record["upstream_status"] == status, record
        if not authed:
            assert not forwarded, record  # never forwards an unauthenticated request
            assert status in (400, 401, 403, 404), record
        if forwarded:
            assert record["decision"] == "allow", record  # forwarded only when authorized
            assert (record["principal"] or {}).get("sub") == "carol", record
    assert_ready(stack)
