"""Forwarding through orchgate, end to end on loopback sockets.

orchgate runs under uvicorn in front of a fake IdP and a recording upstream (tests/harness.py);
what the upstream received is compared with what the caller sent. Personas follow
policies/policy.csv: `alice` deploys team A's workflows (group team-a-deployers), `rita` only
reads them (group team-a-readers).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import jwt
import pytest
import websockets.sync.client
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.harness import (
    WS_IMPLS,
    FakeIdP,
    Orchgate,
    RecordingUpstream,
    Reply,
    StartOrchgate,
    Stream,
    bearer,
    legacy_websocket_warnings,
    loopback_socket,
    refused_port,
    wait_for,
)

DEPLOYERS = ["team-a-deployers"]
READERS = ["team-a-readers"]
DAG = "/airflow/api/v2/dags/team_a_etl"
PROBLEM = "urn:orchgate:problem:"
EVENTS_IN = "/prefect/api/events/in"


def alice(idp: FakeIdP, **kwargs: Any) -> str:
    return idp.token("alice", groups=DEPLOYERS, **kwargs)


def assert_problem(response: httpx2.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug
    assert body["status"] == status
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def assert_audited(gate: Orchgate, response: httpx2.Response, *, sub: str | None,
                   decision: str | None, status: int) -> dict[str, Any]:
    record = gate.audit_record(response.headers["x-request-id"])
    assert (record["principal"] or {}).get("sub") == sub
    assert record["decision"] == decision
    assert record["status"] == status
    return record


# -- what reaches the upstream ---------------------------------------------------------------


def test_get_reaches_upstream_with_orchgate_credential_and_clean_headers(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    upstream.on("GET", "/api/v2/dags/team_a_etl", Reply({"dag_id": "team_a_etl"}))
    token = alice(idp)
    response = client.get(DAG + "?fields=dag_id", headers={
        **bearer(token),
        "Cookie": "_token=caller-airflow-session; other=1",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-User": "admin",
        "Forwarded": "for=203.0.113.7;proto=https",
        "X-Real-IP": "203.0.113.7",
        "X-Request-ID": "chosen-by-caller",
        "Connection": "X-Named-By-Connection",
        "X-Named-By-Connection": "drop me",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Trailer": "X-Checksum",
        "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
        "X-Custom": "kept",
    })

    assert response.status_code == 200, response.text
    assert response.json() == {"dag_id": "team_a_etl"}
    [seen] = upstream.requests("/api/v2/dags/team_a_etl")
    assert seen.method == "GET"
    assert seen.target == "/api/v2/dags/team_a_etl?fields=dag_id"
    # The caller's credential is replaced by a short-lived Airflow token minted for the caller.
    authorization = seen.header("authorization")
    assert authorization is not None
    assert authorization.startswith("Bearer ")
    upstream_token = authorization.removeprefix("Bearer ")
    assert upstream_token != token
    assert token not in json.dumps(seen.headers)
    claims = jwt.decode(upstream_token, orchgate.airflow_secret, algorithms=["HS512"],
                        audience="apache-airflow")
    assert claims["sub"] == "alice"
    assert claims["role"] == "viewer"
    assert 0 < claims["exp"] - time.time() <= 300
    # No cookies, no client identity or routing claims, no hop-by-hop headers.
    names = seen.header_names
    assert "cookie" not in names
    assert not names & {"forwarded", "x-real-ip", "x-forwarded-user", "keep-alive", "te",
                        "trailer", "proxy-authorization", "x-named-by-connection",
                        "connection"}
    assert seen.all("x-forwarded-for") == ["127.0.0.1"]
    assert seen.all("x-forwarded-proto") == ["http"]
    assert seen.all("x-forwarded-host") == [f"127.0.0.1:{orchgate.port}"]
    assert seen.header("x-custom") == "kept"
    # One request id, orchgate's, the same upstream and downstream.
    request_id = response.headers["x-request-id"]
    assert seen.all("x-request-id") == [request_id]
    assert request_id != "chosen-by-caller"

    record = assert_audited(orchgate, response, sub="alice", decision="allow", status=200)
    assert record["workflows"] == ["team_a_etl"]
    assert record["action"] == "read"
    assert record["upstream_status"] == 200
    assert token not in orchgate.audit_file.read_text(encoding="utf-8")


def test_ndjson_response_is_streamed_not_buffered(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    lines = [json.dumps({"state": s}).encode() + b"\n"
             for s in ("queued", "running", "running", "success")]
    stream = Stream(lines, interval=0.5)  # the last line ~1.5 s after the first
    upstream.on("GET", "/api/v2/dags/team_a_etl/dagRuns/r1/wait", stream)

    received: list[tuple[float, str]] = []
    with client.stream("GET", DAG + "/dagRuns/r1/wait", headers=bearer(alice(idp))) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            received.append((time.monotonic(), line))

    assert [line for _, line in received] == [line.decode().strip() for line in lines]
    # Seen by the caller before the upstream had even produced the last line: not buffered.
    assert len(stream.sent_at) == len(lines)
    assert received[0][0] < stream.sent_at[-1]
    record = orchgate.audit_record(request_id)
    assert (record["principal"]["sub"], record["decision"], record["status"]) == \
        ("alice", "allow", 200)
    assert record["bytes_out"] == sum(map(len, lines))


# -- request bodies and the size limit ------------------------------------------------------

SMALL = {"limits": {"max_body_bytes": 1024}}
TRIGGER = DAG + "/dagRuns"
# A trigger's body is read whole (orchgate adds the caller to its note); clearing a run streams.
CLEAR_PATH = "/dags/team_a_etl/dagRuns/manual__1/clear"
CLEAR = "/airflow/api/v2" + CLEAR_PATH


def test_body_over_limit_with_content_length_is_413_and_never_forwarded(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate(overrides=SMALL)
    with gate.client() as client:
        response = client.post(TRIGGER, content=b"x" * 2048,
                               headers={**bearer(alice(idp)), "Content-Type": "application/json"})

    body = assert_problem(response, 413, "body-too-large")
    assert body["title"] == "Request body too large"
    upstream.wait_idle()
    assert upstream.requests() == []
    # Refused at the edge, before the token is even looked at.
    record = assert_audited(gate, response, sub=None, decision=None, status=413)
    assert record["problem"] == "body-too-large"


async def upstream_saw(upstream: RecordingUpstream, path: str) -> None:
    """Wait (bounded) until the upstream has the request's head: orchgate streams the body."""
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: upstream.requests(path),
                                                    what="request head at the upstream"))


@pytest.mark.anyio
async def test_chunked_body_over_limit_is_413_and_upstream_gets_no_complete_request(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate(overrides=SMALL)

    async def body() -> AsyncIterator[bytes]:  # 2 KiB in 512-byte chunks, no Content-Length
        yield b"y" * 512
        await upstream_saw(upstream, "/api/v2" + CLEAR_PATH)
        for _ in range(3):
            yield b"y" * 512

    async with gate.async_client() as client:
        response = await client.post(CLEAR, content=body(), headers=bearer(alice(idp)))

    assert_problem(response, 413, "body-too-large")
    assert "content-length" not in response.request.headers
    upstream.wait_idle()
    [seen] = upstream.requests()
    assert not seen.complete  # the upstream saw the body start, then the connection drop
    assert len(seen.body) <= 1024
    record = assert_audited(gate, response, sub="alice", decision="allow", status=413)
    assert record["problem"] == "body-too-large"


@pytest.mark.anyio
async def test_chunked_body_within_limit_is_streamed_through(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate(overrides=SMALL)
    upstream.on("POST", "/api/v2" + CLEAR_PATH, Reply({"dag_run_id": "r2"}))
    chunks = [b'{"logical_date": null, ', b'"conf": {"pad": "' + b"z" * 400 + b'"}}']

    async def body() -> AsyncIterator[bytes]:
        yield chunks[0]
        # Not buffered: the upstream has the request before the caller has sent all of it.
        await upstream_saw(upstream, "/api/v2" + CLEAR_PATH)
        yield chunks[1]

    async with gate.async_client() as client:
        response = await client.post(CLEAR, content=body(), headers=bearer(alice(idp)))

    assert response.status_code == 200, response.text
    [seen] = upstream.requests("/api/v2" + CLEAR_PATH)
    assert seen.complete
    assert seen.body == b"".join(chunks)
    authorization = seen.header("authorization") or ""
    claims = jwt.decode(authorization.removeprefix("Bearer "), gate.airflow_secret,
                        algorithms=["HS512"], audience="apache-airflow")
    assert claims["role"] == "user"  # the run right: Airflow's smallest role that triggers
    assert_audited(gate, response, sub="alice", decision="allow", status=200)


# -- upstream failures ----------------------------------------------------------------------


class HangsUp:
    """An upstream that reads each request, then closes the connection without an answer."""

    def __init__(self) -> None:
        self.sock = loopback_socket()
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                if data:
                    self.requests.append(data.split(b"\r\n", 1)[0])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize(("method", "path", "body"), [("POST", TRIGGER, {"logical_date": None}),
                                                      ("GET", DAG, None)])
def test_an_upstream_that_hangs_up_is_502_saying_the_call_may_have_run(
        idp: FakeIdP, start_orchgate: StartOrchgate, method: str, path: str,
        body: dict[str, Any] | None) -> None:
    # Unlike a refused connection, the call reached the upstream: the caller is told it may
    # have been carried out (a write is not sent again by orchgate, a read is).
    hangs_up = HangsUp()
    try:
        gate = start_orchgate(airflow_url=f"http://127.0.0.1:{hangs_up.port}")
        with gate.client() as client:
            response = client.request(method, path, json=body,
                                      headers=bearer(idp.token("alice", groups=DEPLOYERS)))
            live = client.get("/_orchgate/livez")
    finally:
        hangs_up.close()

    problem = assert_problem(response, 502, "upstream-disconnected")
    assert problem["detail"] == ("airflow closed the connection without answering; the call "
                                 "may have been carried out there")
    assert str(hangs_up.port) not in json.dumps(problem)
    assert live.status_code == 200
    record = assert_audited(gate, response, sub="alice", decision="allow", status=502)
    assert (record["upstream_status"], record["problem"]) == (None, "upstream-disconnected")
    sent = [line.split(b" ")[0].decode() for line in hangs_up.requests]
    if method == "POST":
        assert sent == ["POST"]  # a write goes once
        assert record["intent_seq"] is not None  # and was on file before it went
    else:
        assert len(sent) >= 2 and set(sent) == {"GET"}  # a read is tried again first


def test_upstream_down_is_502_and_orchgate_stays_live(
        idp: FakeIdP, start_orchgate: StartOrchgate) -> None:
    with refused_port() as port:
        gate = start_orchgate(airflow_url=f"http://127.0.0.1:{port}")
        with gate.client() as client:
            response = client.get(DAG, headers=bearer(alice(idp)))
            live = client.get("/_orchgate/livez")

    body = assert_problem(response, 502, "upstream-unreachable")
    assert str(port) not in json.dumps(body)  # no upstream address in the answer
    assert live.status_code == 200
    record = assert_audited(gate, response, sub="alice", decision="allow", status=502)
    assert record["upstream_status"] is None


def test_upstream_slow_is_504_and_orchgate_stays_live(
        idp: FakeIdP, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    gate = start_orchgate(overrides={"limits": {"read_timeout_seconds": 0.5}})
    upstream.on("GET", "/api/v2/dags/team_a_etl", Reply({"late": True}, delay=2.0))
    with gate.client() as client:
        response = client.get(DAG, headers=bearer(alice(idp)))
        live = client.get("/_orchgate/livez")

    assert_problem(response, 504, "upstream-timeout")
    assert len(upstream.requests("/api/v2/dags/team_a_etl")) == 1  # it was forwarded
    assert live.status_code == 200
    assert_audited(gate, response, sub="alice", decision="allow", status=504)


# -- refusals -------------------------------------------------------------------------------


def test_reader_triggering_another_teams_dag_is_403_and_not_forwarded(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    response = client.post("/airflow/api/v2/dags/team_b_ingest/dagRuns",
                           json={"logical_date": None},
                           headers=bearer(idp.token("rita", groups=READERS)))

    assert_problem(response, 403, "forbidden")
    upstream.wait_idle()
    assert upstream.requests() == []
    record = assert_audited(orchgate, response, sub="rita", decision="deny", status=403)
    assert record["workflows"] == ["team_b_ingest"]
    assert record["action"] == "run"


def test_operation_not_in_catalog_is_403(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    response = client.post(DAG, headers=bearer(alice(idp)))  # Airflow has no such route

    body = assert_problem(response, 403, "operation-not-in-catalog")
    assert body["title"] == "Operation not in catalog"
    upstream.wait_idle()
    assert upstream.requests() == []
    record = assert_audited(orchgate, response, sub="alice", decision=None, status=403)
    assert record["problem"] == "operation-not-in-catalog"


def test_no_token_is_401_with_a_bearer_challenge(
        upstream: RecordingUpstream, orchgate: Orchgate, client: httpx2.Client) -> None:
    response = client.get(DAG)

    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer realm="orchgate"'
    assert upstream.requests() == []
    assert_audited(orchgate, response, sub=None, decision=None, status=401)


@pytest.mark.parametrize(("case", "reason"), [
    ("expired", "token expired"),
    ("unpublished-key", "unknown signing key"),
    ("forged-signature", "signature invalid"),
    ("wrong-audience", "audience not accepted"),
])
def test_invalid_token_is_401_invalid_token_and_never_echoed(
        case: str, reason: str, idp: FakeIdP, upstream: RecordingUpstream,
        orchgate: Orchgate, client: httpx2.Client) -> None:
    if case == "expired":
        token = alice(idp, exp_in=-600)  # well beyond the 30 s leeway
    elif case == "unpublished-key":
        token = idp.sign(idp.claims("alice", groups=DEPLOYERS), kid=rogue_kid(idp))
    elif case == "forged-signature":  # the published kid, another key's signature
        token = idp.sign(idp.claims("alice", groups=DEPLOYERS), key_of=rogue_kid(idp))
    else:
        token = alice(idp, aud="someone-else")
    response = client.get(DAG, headers=bearer(token))

    assert_problem(response, 401, "unauthorized")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="orchgate", error="invalid_token"')
    assert reason in challenge
    for part in token.split("."):  # neither the token nor any of its parts comes back
        assert part not in response.text
        assert part not in challenge
    assert upstream.requests() == []
    assert_audited(orchgate, response, sub=None, decision=None, status=401)
    assert token.split(".")[1] not in orchgate.audit_file.read_text(encoding="utf-8")


def rogue_kid(idp: FakeIdP) -> str:
    """A key of the IdP's that its JWKS does not publish."""
    rogue = "rogue"
    if rogue not in idp.keys:
        idp.add_key(rogue, publish=False)
    return rogue


# -- lists ----------------------------------------------------------------------------------


def dag(dag_id: str) -> dict[str, Any]:
    return {"dag_id": dag_id, "dag_display_name": dag_id, "is_paused": False, "tags": []}


ALL_DAGS = [dag(f"{team}_{i:03d}") for i in range(60)
            for team in ("team_a", "team_b", "shared", "other")]  # 240 DAGs, interleaved


def paged_dags(request: Any) -> Reply:
    params = request.params
    limit, offset = int(params["limit"][0]), int(params["offset"][0])
    return Reply({"dags": ALL_DAGS[offset:offset + limit], "total_entries": len(ALL_DAGS)})


def test_list_shows_only_readable_dags_with_the_callers_window(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    upstream.on("GET", "/api/v2/dags", paged_dags)
    visible = [d for d in ALL_DAGS if d["dag_id"].startswith(("team_a_", "shared_"))]

    response = client.get("/airflow/api/v2/dags?limit=7&offset=5&order_by=dag_id",
                          headers=bearer(alice(idp)))

    assert response.status_code == 200, response.text
    data = response.json()
    assert data["dags"] == visible[5:12]
    assert data["total_entries"] == len(visible) == 120
    # The upstream was read page by page with orchgate's credential; the caller's other
    # query parameters went along.
    pages = upstream.requests("/api/v2/dags")
    assert [(r.params["limit"], r.params["offset"]) for r in pages] == [
        (["100"], ["0"]), (["100"], ["100"]), (["100"], ["200"])]
    assert all(r.params["order_by"] == ["dag_id"] for r in pages)
    assert all((r.header("authorization") or "").startswith("Bearer ") for r in pages)
    record = assert_audited(orchgate, response, sub="alice", decision="allow", status=200)
    assert record["notes"]["list"] == {"scanned": 240, "visible": 120}
    assert not any(w.startswith(("team_b_", "other_")) for w in record["workflows"])


def test_list_default_window_and_offset_past_the_end(
        idp: FakeIdP, upstream: RecordingUpstream, orchgate: Orchgate,
        client: httpx2.Client) -> None:
    upstream.on("GET", "/api/v2/dags", paged_dags)
    rita = bearer(idp.token("rita", groups=READERS))
    visible = [d for d in ALL_DAGS if d["dag_id"].startswith(("team_a_", "shared_"))]

    first = client.get("/airflow/api/v2/dags", headers=rita)
    past = client.get("/airflow/api/v2/dags?offset=500", headers=rita)

    assert first.status_code == past.status_code == 200
    assert first.json()["dags"] == visible[:50]  # Airflow's default limit
    assert first.json()["total_entries"] == 120
    assert past.json() == {"dags": [], "total_entries": 120}
    assert_audited(orchgate, first, sub="rita", decision="allow", status=200)
    assert_audited(orchgate, past, sub="rita", decision="allow", status=200)


# -- Prefect websockets ---------------------------------------------------------------------


@legacy_websocket_warnings
@pytest.mark.parametrize("ws_impl", WS_IMPLS)
def test_websocket_is_bridged_with_the_servers_auth_string(
        ws_impl: str, idp: FakeIdP, upstream: RecordingUpstream,
        start_orchgate: StartOrchgate) -> None:
    orchgate = start_orchgate(ws=ws_impl)
    upstream.prefect_socket("/api/events/in", orchgate.prefect_auth)
    token = alice(idp)

    with websockets.sync.client.connect(
            orchgate.ws_url(EVENTS_IN), subprotocols=[Subprotocol("prefect")],
            open_timeout=5, close_timeout=5) as ws:
        assert ws.subprotocol == "prefect"
        ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "auth_success"}
        event = json.dumps({"event": "prefect.task-run.Completed", "id": "e1"})
        ws.send(event)
        assert ws.recv(timeout=5) == event  # echoed by the upstream, relayed back
        ws.send(b"\x00binary")  # not part of the prefect subprotocol: dropped, counted

    [session] = upstream.sessions
    assert session.auth_token == orchgate.prefect_auth  # the server's credential, not the JWT
    assert session.authenticated
    assert session.messages == [event]
    assert token not in json.dumps(session.request.headers)
    basic = base64.b64encode(orchgate.prefect_auth.encode()).decode()
    assert session.request.all("authorization") == [f"Basic {basic}"]
    assert session.request.all("x-forwarded-for") == ["127.0.0.1"]
    wait_for(lambda: session.closed, what="upstream socket closed")
    record = orchgate.audit_where(lambda r: r["path"] == EVENTS_IN)
    assert record["principal"]["sub"] == "alice"
    assert record["decision"] == "allow"  # events in: granted to anyone who may run somewhere
    assert record["status"] == 1000
    assert record["notes"]["websocket"] == {"frames_in": 1, "frames_out": 1,
                                            "dropped_in": 1, "dropped_out": 0,
                                            "closed_by": "client"}


@legacy_websocket_warnings
@pytest.mark.parametrize("ws_impl", WS_IMPLS)
@pytest.mark.parametrize(("case", "problem", "status"), [
    ("bad-token", "unauthorized", 401),
    ("reader-cannot-run", "forbidden", 403),
])
def test_websocket_refused_is_closed_1008_and_never_reaches_upstream(
        case: str, problem: str, status: int, ws_impl: str, idp: FakeIdP,
        upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    orchgate = start_orchgate(ws=ws_impl)
    upstream.prefect_socket("/api/events/in", orchgate.prefect_auth)
    token = "not.a.jwt" if case == "bad-token" else idp.token("rita", groups=READERS)

    with websockets.sync.client.connect(
            orchgate.ws_url(EVENTS_IN), subprotocols=[Subprotocol("prefect")],
            open_timeout=5, close_timeout=5) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert token not in closed.value.rcvd.reason
    upstream.wait_idle()
    assert upstream.requests() == []
    assert upstream.sessions == []
    record = orchgate.audit_where(lambda r: r["path"] == EVENTS_IN)
    assert (record["principal"] or {}).get("sub") == (None if case == "bad-token" else "rita")
    assert record["decision"] == (None if case == "bad-token" else "deny")
    assert (record["status"], record["problem"]) == (status, problem)


@legacy_websocket_warnings
@pytest.mark.parametrize("ws_impl", WS_IMPLS)
def test_websocket_without_prefect_subprotocol_is_refused(
        ws_impl: str, upstream: RecordingUpstream, start_orchgate: StartOrchgate) -> None:
    orchgate = start_orchgate(ws=ws_impl)
    upstream.prefect_socket("/api/events/in", orchgate.prefect_auth)

    with pytest.raises(InvalidStatus) as refused:
        websockets.sync.client.connect(orchgate.ws_url(EVENTS_IN), open_timeout=5)

    assert refused.value.response.status_code == 403
    assert upstream.requests() == []
    record = orchgate.audit_where(lambda r: r["path"] == EVENTS_IN)
    assert (record["status"], record["problem"]) == (403, "bad-request")  # as the caller saw it
