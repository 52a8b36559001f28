"""Hostile websockets (Prefect's `prefect` subprotocol): refused before the upstream hears of
them, audited, and the proxy ready afterwards; a token that expires mid-stream ends the bridge."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import websockets.sync.client
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.security.kit import Kit

EVENTS_IN = "/prefect/api/events/in"
PREFECT = [Subprotocol("prefect")]


@pytest.fixture
def sockets(kit: Kit) -> Kit:
    kit.upstream.prefect_socket("/api/events/in", kit.gate.prefect_auth)
    kit.upstream.prefect_socket("/api/events/out", kit.gate.prefect_auth)
    return kit


def refused_after_accept(kit: Kit, first: Callable[[Kit], Any], path: str = EVENTS_IN,
                         headers: dict[str, str] | None = None) -> int:
    """Open the socket, send the first message, return the close code orchgate sent."""
    with websockets.sync.client.connect(kit.gate.ws_url(path), subprotocols=PREFECT,
                                        additional_headers=headers, open_timeout=5,
                                        close_timeout=5) as ws:
        ws.send(first(kit))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def auth(token: str) -> str:
    return json.dumps({"type": "auth", "token": token})


FIRST_MESSAGE_CASES = {
    "no-token": (lambda k: json.dumps({"type": "auth"}), 400),
    "bad-token": (lambda k: auth("not.a.jwt"), 401),
    "other-audience": (lambda k: auth(k.token(aud="prefect")), 401),
    "expired-token": (lambda k: auth(k.token(exp_in=-120)), 401),
    "other-issuer-kid": (lambda k: auth(k.other_idp.sign(k.claims())), 401),
    "not-an-auth-message": (lambda k: json.dumps({"type": "event", "token": k.alice()}), 400),
    "not-json": (lambda k: "{auth", 400),
    "reader-cannot-send-events": (lambda k: auth(k.token("amy", groups=["team-a-readers"])),
                                  403),
    "nobody-cannot-send-events": (lambda k: auth(k.token("dave", groups=())), 403),
}


def assert_refused_and_audited(kit: Kit, before: int, status: int) -> None:
    kit.upstream.wait_idle()
    assert [r for r in kit.forwarded() if r.websocket] == []
    assert kit.upstream.sessions == []
    records = kit.gate.audit_records()[before:]
    assert [(r["path"], r["status"], r["upstream_status"]) for r in records] == \
        [(records[0]["path"], status, None)]
    for token in kit.minted:
        assert token not in json.dumps(records)
    kit.assert_ready()


@pytest.mark.parametrize("name", sorted(FIRST_MESSAGE_CASES))
def test_socket_refused_on_its_first_message(sockets: Kit, name: str) -> None:
    first, status = FIRST_MESSAGE_CASES[name]
    before = sockets.audit_count()
    assert refused_after_accept(sockets, first) == 1008
    wait_records(sockets, before + 1)
    assert_refused_and_audited(sockets, before, status)


UpgradeCase = tuple[str, Callable[[Kit], dict[str, str]], list[Subprotocol] | None]
UPGRADE_CASES: dict[str, UpgradeCase] = {
    "upgrade-token-other-audience": (EVENTS_IN, lambda k: {
        "Authorization": "Bearer " + k.token(aud="prefect")}, PREFECT),
    "upgrade-two-authorizations": (EVENTS_IN, lambda k: {
        "Authorization": "Basic eDp5"}, PREFECT),
    "no-subprotocol": (EVENTS_IN, lambda k: {"Authorization": "Bearer " + k.alice()}, None),
    "socket-not-in-catalog": ("/prefect/api/task_runs/subscriptions/scheduled",
                              lambda k: {"Authorization": "Bearer " + k.alice()}, PREFECT),
    "socket-path-traversal": ("/prefect/api/events/%2e%2e/in",
                              lambda k: {"Authorization": "Bearer " + k.alice()}, PREFECT),
    "socket-encoded-prefix": ("/%70refect/api/events/in",
                              lambda k: {"Authorization": "Bearer " + k.alice()}, PREFECT),
}


@pytest.mark.parametrize("name", sorted(UPGRADE_CASES))
def test_socket_refused_on_its_upgrade(sockets: Kit, name: str) -> None:
    path, headers, protocols = UPGRADE_CASES[name]
    before = sockets.audit_count()
    answer: int | None = None
    try:
        with websockets.sync.client.connect(
                sockets.gate.ws_url(path), subprotocols=PREFECT if protocols else None,
                additional_headers=headers(sockets), open_timeout=5) as ws:
            # Accepted, then refused (after the auth message every Prefect client sends).
            ws.send(auth(sockets.alice()))
            answer = closed_code(ws)
    except InvalidStatus as refused:
        answer = refused.response.status_code  # 403: how ASGI refuses an upgrade
    assert answer in (403, 1008)
    wait_records(sockets, before + 1)
    record = sockets.gate.audit_records()[before]
    assert_refused_and_audited(sockets, before, record["status"])
    assert record["status"] in (400, 401, 403)
    assert record["problem"] is not None


def closed_code(ws: Any) -> int | None:
    try:
        ws.recv(timeout=5)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    return None


def wait_records(kit: Kit, count: int) -> None:
    deadline = time.monotonic() + 5
    while kit.audit_count() < count:
        assert time.monotonic() < deadline, "audit record not written"
        time.sleep(0.02)


def test_token_expiring_mid_stream_ends_the_bridge(sockets: Kit) -> None:
    before = sockets.audit_count()
    token = sockets.token(exp_in=2)
    with websockets.sync.client.connect(sockets.gate.ws_url(EVENTS_IN), subprotocols=PREFECT,
                                        open_timeout=5, close_timeout=5) as ws:
        ws.send(auth(token))
        assert json.loads(ws.recv(timeout=5)) == {"type": "auth_success"}
        ws.send(json.dumps({"event": "e1"}))
        assert json.loads(ws.recv(timeout=5)) == {"event": "e1"}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=8)  # nothing more comes, until orchgate closes: the token expired
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token expired")
    [session] = sockets.upstream.sessions
    assert session.auth_token == sockets.gate.prefect_auth  # never the caller's token
    assert session.messages == [json.dumps({"event": "e1"})]
    wait_records(sockets, before + 1)
    record = sockets.gate.audit_records()[before]
    assert record["status"] == 1008
    assert record["notes"]["websocket"]["closed_by"] == "token-expired"
    assert token not in json.dumps(record)
    sockets.assert_ready()
