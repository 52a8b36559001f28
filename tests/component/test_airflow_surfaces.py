"""Airflow surfaces through orchgate against the recording upstream: what reaches Airflow.

Personas follow policies/policy.csv (alice deploys team A's DAGs, rita reads them, carol
administers everything); the secrets tests load a policy of their own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness import (
    FakeIdP,
    Orchgate,
    Received,
    RecordingUpstream,
    Reply,
    StartOrchgate,
    bearer,
)

PROBLEM = "urn:orchgate:problem:"
DAGS = [{"dag_id": d, "tags": [{"name": d.split("_")[0] + "-" + d.split("_")[1],
                                "dag_id": d}],
         "bundle_name": "dags-folder", "relative_fileloc": f"{d}.py"}
        for d in ("shared_housekeeping", "team_a_etl", "team_a_reporting", "team_b_ingest")]
CONNECTION = {"connection_id": "db", "conn_type": "postgres", "description": None,
              "host": "db.internal", "login": "etl", "schema": None, "port": 5432,
              "password": "s3cret-pw", "extra": '{"region": "eu-west-1"}', "team_name": None}


def dags(request: Received) -> Reply:
    offset = int(request.params["offset"][0])
    return Reply({"dags": DAGS[offset:offset + 100], "total_entries": len(DAGS)})


def alice(idp: FakeIdP) -> dict[str, str]:
    return bearer(idp.token("alice", groups=["team-a-deployers"]))


def rita(idp: FakeIdP) -> dict[str, str]:
    return bearer(idp.token("rita", groups=["team-a-readers"]))


def assert_refused(response: httpx2.Response, slug: str, upstream: RecordingUpstream,
                   path: str) -> str:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["type"] == PROBLEM + slug
    assert upstream.requests(path) == []
    detail: str = body["detail"]
    return detail


@pytest.mark.parametrize(("path", "words"), [
    ("/airflow/ui/auth/token", "POST /ui/auth/token"),
    ("/airflow/ui/config", "UI API"),
    ("/airflow/auth/token", "identity provider"),
    ("/airflow/execution/task-instances/x/run", "workers"),
    ("/airflow/docs", "documentation"),
    ("/airflow/openapi.json", "API description"),
    ("/airflow/myplugin/page", "plugin mounts"),
    ("/airflow/api/v1/dags", "/api/v2"),
    ("/airflow/api/v2/auth/login", "identity provider"),
])
def test_blocked_surfaces_are_403_with_the_reason(
        path: str, words: str, idp: FakeIdP, upstream: RecordingUpstream,
        client: httpx2.Client) -> None:
    for method in ("GET", "POST"):
        response = client.request(method, path, headers=bearer(idp.token("carol",
                                                                         groups=["platform-admins"])))
        if path.endswith("/auth/login") and method == "POST":
            assert response.status_code == 403  # not an operation at all
            continue
        detail = assert_refused(response, "blocked", upstream, path.removeprefix("/airflow"))
        assert words in detail


def test_a_triggered_run_carries_the_caller_in_its_note(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    path = "/api/v2/dags/team_a_etl/dagRuns"
    upstream.on("POST", path, Reply({"dag_run_id": "r1"}))

    plain = client.post("/airflow" + path, json={"logical_date": None}, headers=alice(idp))
    noted = client.post("/airflow" + path, json={"logical_date": None, "note": "hotfix"},
                        headers=alice(idp))

    assert plain.status_code == noted.status_code == 200
    sent = [json.loads(r.body) for r in upstream.requests(path)]
    assert sent[0]["note"] == ("Triggered through orchgate by alice (request "
                               f"{plain.headers['x-request-id']})")
    assert sent[1]["note"].startswith("hotfix\n\nTriggered through orchgate by alice")
    assert sent[1]["logical_date"] is None


def test_a_bulk_entity_of_another_team_refuses_the_whole_request(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    body = {"actions": [{"action": "update", "entities": [
        {"dag_run_id": "mine", "state": "failed"},
        {"dag_run_id": "theirs", "dag_id": "team_b_ingest", "state": "failed"}]}]}

    response = client.patch("/airflow/api/v2/dags/team_a_etl/dagRuns", json=body,
                            headers=alice(idp))

    detail = assert_refused(response, "forbidden", upstream, "/api/v2/dags/team_a_etl/dagRuns")
    assert "team_b_ingest" in detail  # the caller named it
    record = orchgate.audit_record(response.headers["x-request-id"])
    assert record["decision"] == "deny"
    assert record["workflows"] == ["team_a_etl", "team_b_ingest"]


def test_pausing_by_pattern_needs_every_matched_dag(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    matched = {"team": DAGS[1:], "team_a": DAGS[1:3]}

    def listing(request: Received) -> Reply:
        pattern = request.params["dag_id_pattern"][0]
        return Reply({"dags": matched[pattern], "total_entries": len(matched[pattern])})
    upstream.on("GET", "/api/v2/dags", listing)
    upstream.on("PATCH", "/api/v2/dags", Reply({"dags": [], "total_entries": 2}))

    refused = client.patch("/airflow/api/v2/dags?dag_id_pattern=team", json={"is_paused": True},
                           headers=alice(idp))
    allowed = client.patch("/airflow/api/v2/dags?dag_id_pattern=team_a",
                           json={"is_paused": True}, headers=alice(idp))

    assert refused.status_code == 403
    assert "1 of the 3 DAGs" in refused.json()["detail"]
    assert "team_b" not in refused.json()["detail"]
    assert allowed.status_code == 200, allowed.text
    patches = upstream.requests("/api/v2/dags", "PATCH")
    assert [r.params["dag_id_pattern"] for r in patches] == [["team_a"]]
    record = orchgate.audit_record(allowed.headers["x-request-id"])
    assert record["workflows"] == ["team_a_etl", "team_a_reporting"]


def test_batch_lists_are_narrowed_to_readable_dags(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    upstream.on("GET", "/api/v2/dags", dags)
    path = "/api/v2/dags/~/dagRuns/list"
    upstream.on("POST", path, Reply({"dag_runs": [], "total_entries": 0}))

    every = client.post("/airflow" + path, json={"page_limit": 5}, headers=rita(idp))
    asked = client.post("/airflow" + path, json={"dag_ids": ["team_b_ingest", "team_a_etl"]},
                        headers=rita(idp))
    none = client.post("/airflow" + path, json={"dag_ids": ["team_b_ingest"]},
                       headers=rita(idp))

    assert every.status_code == asked.status_code == none.status_code == 200
    sent = [json.loads(r.body) for r in upstream.requests(path)]
    assert sent == [{"page_limit": 5, "dag_ids": ["shared_housekeeping", "team_a_etl",
                                                  "team_a_reporting"]},
                    {"dag_ids": ["team_a_etl"]}]
    assert none.json() == {"dag_runs": [], "total_entries": 0}


def test_dag_tags_show_only_tags_of_readable_dags(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    upstream.on("GET", "/api/v2/dags", dags)
    upstream.on("GET", "/api/v2/dagTags", Reply({
        "tags": ["shared-housekeeping", "team-a", "team-b", "unused"], "total_entries": 4}))

    response = client.get("/airflow/api/v2/dagTags", headers=rita(idp))

    assert response.status_code == 200, response.text
    assert response.json() == {"tags": ["shared-housekeeping", "team-a"], "total_entries": 2}


@pytest.fixture
def secrets_policy(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.csv"
    path.write_text("p, group:ops, *, *, admin, allow\n"
                    "p, group:ops, airflow, @secrets, read, deny\n"
                    "p, group:vault, *, *, admin, allow\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("group", "hidden"), [("ops", True), ("vault", False)])
def test_connection_and_variable_values_need_the_secrets_right(
        group: str, hidden: bool, secrets_policy: Path, idp: FakeIdP,
        upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate(overrides={"policy": {"files": [str(secrets_policy)]}})
    upstream.on("GET", "/api/v2/connections", Reply({"connections": [CONNECTION],
                                                     "total_entries": 1}))
    upstream.on("PATCH", "/api/v2/variables/k", Reply({
        "key": "k", "value": "plain-value", "description": None, "is_encrypted": True,
        "team_name": None}))
    caller = bearer(idp.token("sam", groups=[group]))

    with gate.client() as client:
        listed = client.get("/airflow/api/v2/connections", headers=caller)
        patched = client.patch("/airflow/api/v2/variables/k", json={"key": "k", "value": "v2"},
                               headers=caller)

    assert listed.status_code == patched.status_code == 200
    connection: dict[str, Any] = listed.json()["connections"][0]
    assert (connection["password"] == "***") is hidden
    assert (connection["extra"] == "***") is hidden
    assert connection["host"] == "db.internal"
    assert (patched.json()["value"] == "***") is hidden
    assert json.loads(upstream.requests("/api/v2/variables/k")[0].body)["value"] == "v2"
    for response in (listed, patched):
        record = gate.audit_record(response.headers["x-request-id"])
        assert "s3cret" not in json.dumps(record)
        assert record.get("notes", {}).get("redacted") == (
            ("connection" if response is listed else "variable") if hidden else None)


# -- credential modes ------------------------------------------------------------------------


def test_rs256_tokens_verify_against_the_jwks_orchgate_serves(
        tmp_path: Path, idp: FakeIdP, upstream: RecordingUpstream,
        start_orchgate: StartOrchgate) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "airflow-signing.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    gate = start_orchgate(overrides={"upstreams": {"airflow": {"credential": {
        "mode": "jwt-rs256", "signing_secret_file": None, "signing_key_file": str(key_file),
        "lifetime_seconds": 60}}}})
    path = "/api/v2/dags/team_a_etl"

    with gate.client() as client:
        response = client.get("/airflow" + path, headers=alice(idp))
        jwks = client.get("/_orchgate/airflow/jwks.json")

    assert response.status_code == 200, response.text
    assert jwks.status_code == 200
    assert all("d" not in k for k in jwks.json()["keys"])
    token = (upstream.requests(path)[0].header("authorization") or "").removeprefix("Bearer ")
    kid = jwt.get_unverified_header(token)["kid"]
    public = next(jwt.PyJWK(k) for k in jwks.json()["keys"] if k["kid"] == kid)
    claims = jwt.decode(token, public.key, algorithms=["RS256"], audience="apache-airflow")
    assert (claims["sub"], claims["role"]) == ("alice", "viewer")
    assert claims["exp"] - claims["iat"] == 60


def test_hs512_mode_serves_no_jwks(client: httpx2.Client) -> None:
    assert client.get("/_orchgate/airflow/jwks.json").status_code == 404


def test_password_mode_sends_the_service_accounts_token(
        tmp_path: Path, idp: FakeIdP, upstream: RecordingUpstream,
        start_orchgate: StartOrchgate) -> None:
    (tmp_path / "svc-password").write_text("svc-pw", encoding="utf-8")
    service_token = jwt.encode({"sub": "orchgate-svc", "exp": int(time.time()) + 3600},
                               "k" * 32, algorithm="HS256")
    upstream.on("POST", "/auth/token", Reply({"access_token": service_token}, status=201))
    gate = start_orchgate(overrides={"upstreams": {"airflow": {"credential": {
        "mode": "password", "signing_secret_file": None, "username": "orchgate-svc",
        "password_file": str(tmp_path / "svc-password")}}}})
    path = "/api/v2/dags/team_a_etl"

    with gate.client() as client:
        response = client.get("/airflow" + path, headers=alice(idp))
        ready = client.get("/_orchgate/readyz")

    assert response.status_code == 200, response.text
    assert upstream.requests(path)[0].header("authorization") == f"Bearer {service_token}"
    exchanges = upstream.requests("/auth/token")
    assert len(exchanges) == 1
    assert json.loads(exchanges[0].body) == {"username": "orchgate-svc", "password": "svc-pw"}
    assert ready.json()["checks"]["airflow_credential"]["ready"] is True
    # Airflow sees the service account; orchgate's audit names the caller.
    record = gate.audit_record(response.headers["x-request-id"])
    assert record["principal"]["sub"] == "alice"
    assert "svc-pw" not in json.dumps(gate.audit_records())
