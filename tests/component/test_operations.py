"""Operations on loopback: the metrics endpoint, retries of idempotent calls, the breaker.

Metrics are process-wide (prometheus_client's default registry), so the assertions compare
values before and after the traffic of each test.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import LOOPBACK, FakeIdP, RecordingUpstream, Reply, StartOrchgate, bearer

DAG = "/airflow/api/v2/dags/team_a_etl"
DAG_UPSTREAM = "/api/v2/dags/team_a_etl"
METRICS = {"metrics": {"host": LOOPBACK, "port": 0}}


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition: (name, labels) → value."""
    response = httpx2.get(url, timeout=5.0, trust_env=False)
    assert response.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def alice(idp: FakeIdP) -> dict[str, str]:
    return bearer(idp.token("alice", groups=["team-a-deployers"]))


def test_metrics_after_traffic_have_the_series_and_labels(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate(overrides=METRICS)
    before = scrape(gate.metrics_url)
    reader = bearer(idp.token("rita", groups=["team-a-readers"]))
    with gate.client() as client:
        assert client.get(DAG, headers=alice(idp)).status_code == 200
        assert client.get(DAG, headers=alice(idp)).status_code == 200
        denied = client.post(DAG + "/dagRuns", headers=reader, json={"logical_date": None})
        assert denied.status_code == 403
        assert client.get(DAG).status_code == 401
    on_file = gate.audit_records()  # the records waiting are written out first
    after = scrape(gate.metrics_url)

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return value(after, name, **labels) - value(before, name, **labels) >= by

    assert grew("orchgate_requests_total", 2, system="airflow", action="read",
                decision="allow", status="200")
    assert grew("orchgate_requests_total", system="airflow", action="run", decision="deny",
                status="403")
    assert grew("orchgate_requests_total", system="airflow", action="none", decision="none",
                status="401")
    assert grew("orchgate_request_duration_seconds_count", 2, system="airflow", action="read")
    assert grew("orchgate_request_duration_seconds_bucket", 2, system="airflow",
                action="read", le="+Inf")
    assert grew("orchgate_upstream_response_seconds_count", 2, system="airflow")
    assert value(after, "orchgate_jwks_refreshes_total", issuer=idp.issuer) >= 1
    assert ("orchgate_jwks_refresh_failures_total",
            frozenset({("issuer", idp.issuer)})) in after
    assert value(after, "orchgate_policy_generation", policy="policy") == 1
    assert ("orchgate_policy_reloads_total", frozenset({("policy", "policy")})) in after
    assert ("orchgate_policy_reload_failures_total",
            frozenset({("policy", "policy")})) in after
    # The four records went out in one or more write(2)s (records made within 5 ms share one).
    assert [r["status"] for r in on_file[-4:]] == [200, 200, 403, 401]
    assert grew("orchgate_audit_write_seconds_count", 1, op="append")
    assert ("orchgate_audit_write_failures_total", frozenset({("op", "append")})) in after
    assert grew("orchgate_credential_mints_total", system="airflow", mode="jwt-hs512")
    assert value(after, "orchgate_upstream_circuit_state", system="airflow") == 0
    # Label values come from fixed sets: never a workflow id, a path or a caller.
    text = httpx2.get(gate.metrics_url, timeout=5.0, trust_env=False).text
    assert "team_a_etl" not in text and "alice" not in text and "/api/" not in text


def test_get_is_retried_after_an_upstream_503(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    answers = iter([Reply({"detail": "busy"}, status=503), Reply({"dag_id": "team_a_etl"})])
    upstream.on("GET", DAG_UPSTREAM, lambda _: next(answers))
    gate = start_orchgate(overrides=METRICS)
    before = scrape(gate.metrics_url)
    with gate.client() as client:
        response = client.get(DAG, headers=alice(idp))
    assert response.status_code == 200
    assert response.json() == {"dag_id": "team_a_etl"}
    assert len(upstream.requests(DAG_UPSTREAM, "GET")) == 2
    record = gate.audit_record(response.headers["x-request-id"])
    assert record["status"] == 200 and record["upstream_status"] == 200
    after = scrape(gate.metrics_url)
    retried = ("orchgate_upstream_retries_total",
               frozenset({("system", "airflow"), ("reason", "503")}))
    assert after[retried] - before.get(retried, 0.0) == 1


def test_get_is_retried_at_most_the_configured_times(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    upstream.on("GET", DAG_UPSTREAM, Reply({"detail": "bad gateway"}, status=502))
    gate = start_orchgate(overrides={"retries": {"attempts": 2, "backoff_seconds": 0.01}})
    with gate.client() as client:
        response = client.get(DAG, headers=alice(idp))
    assert response.status_code == 502  # the upstream's own answer, after the last attempt
    assert len(upstream.requests(DAG_UPSTREAM, "GET")) == 3


def test_mutating_post_is_never_retried(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    upstream.on("POST", DAG_UPSTREAM + "/dagRuns", Reply({"detail": "busy"}, status=503))
    gate = start_orchgate()
    with gate.client() as client:
        response = client.post(DAG + "/dagRuns", headers=alice(idp),
                               json={"logical_date": None})
    assert response.status_code == 503
    assert len(upstream.requests(DAG_UPSTREAM + "/dagRuns", "POST")) == 1


def test_breaker_opens_answers_fast_without_the_upstream_and_recovers(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    # Timeouts are failures that reach the upstream, so the test can count what it saw.
    upstream.on("GET", DAG_UPSTREAM, Reply({"dag_id": "team_a_etl"}, delay=2.0))
    gate = start_orchgate(overrides={
        **METRICS, "limits": {"read_timeout_seconds": 0.3},
        "circuit_breaker": {"failures": 2, "cooldown_seconds": 0.6}})
    before = scrape(gate.metrics_url)

    def circuit(client: httpx2.Client) -> dict[str, Any]:
        ready = client.get("/_orchgate/readyz").json()
        check: dict[str, Any] = ready["checks"]["airflow"]
        return check

    with gate.client() as client:
        for _ in range(2):
            assert client.get(DAG, headers=alice(idp)).status_code == 504
        assert circuit(client)["circuit"]["state"] == "open"
        assert circuit(client)["ready"] is False

        started = time.monotonic()
        fast = client.get(DAG, headers=alice(idp))
        assert time.monotonic() - started < 0.25
        assert fast.status_code == 503
        assert fast.headers["content-type"] == "application/problem+json"
        assert fast.json()["type"] == "urn:orchgate:problem:upstream-unavailable"
        assert fast.headers["retry-after"] == "1"
        assert len(upstream.requests(DAG_UPSTREAM)) == 2  # never sent
        assert value(scrape(gate.metrics_url), "orchgate_upstream_circuit_state",
                     system="airflow") == 2

        upstream.on("GET", DAG_UPSTREAM, Reply({"dag_id": "team_a_etl"}))
        time.sleep(0.7)  # the cool-down; then one probe goes through
        probe = client.get(DAG, headers=alice(idp))
        assert probe.status_code == 200
        assert circuit(client)["circuit"]["state"] == "closed"
        assert client.get(DAG, headers=alice(idp)).status_code == 200
    assert len(upstream.requests(DAG_UPSTREAM)) == 4
    after = scrape(gate.metrics_url)
    assert value(after, "orchgate_upstream_circuit_state", system="airflow") == 0
    rejected = ("orchgate_upstream_circuit_rejections_total",
                frozenset({("system", "airflow")}))
    assert after[rejected] - before.get(rejected, 0.0) == 1
    record = gate.audit_where(lambda r: r.get("problem") == "upstream-unavailable")
    assert record["status"] == 503 and record["upstream_status"] is None


def test_breaker_of_one_upstream_leaves_the_other_alone(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    upstream.on("GET", DAG_UPSTREAM, Reply({}, delay=2.0))
    upstream.on("GET", "/api/admin/version", Reply("3.9.1"))
    gate = start_orchgate(overrides={"limits": {"read_timeout_seconds": 0.3},
                                     "circuit_breaker": {"failures": 1,
                                                         "cooldown_seconds": 30}})
    with gate.client() as client:
        assert client.get(DAG, headers=alice(idp)).status_code == 504
        assert client.get(DAG, headers=alice(idp)).status_code == 503
        version = client.get("/prefect/api/admin/version", headers=alice(idp))
    assert version.status_code == 200
    assert json.loads(version.content) == "3.9.1"
