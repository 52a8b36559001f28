"""The hostile-input kit: raw requests, forged tokens and the four checks every case makes.

Every case is sent as raw bytes on its own connection (`Orchgate.exchange`), so nothing
between the test and orchgate normalises it, and then asserts

1. the status (and orchgate's problem type);
2. what the upstream received: nothing, or exactly one request, sanitized;
3. the audit record of the request (found by the `X-Request-ID` orchgate answered with);
4. `/_orchgate/readyz` still answers ready.

Requests the HTTP parser itself refuses (uvicorn/httptools answers 400 before orchgate runs)
have no request id and nothing to audit: for those the case asserts that no audit record was
written and nothing reached the upstream.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from tests.harness import FakeIdP, Orchgate, RawResponse, Received, RecordingUpstream

HEALTH_PATHS = ("/api/v2/monitor/health", "/api/health")
SECURITY_LIMITS = {"max_body_bytes": 64 * 1024, "max_header_bytes": 16 * 1024,
                   "read_timeout_seconds": 2, "connect_timeout_seconds": 2,
                   "body_timeout_seconds": 2}
PROBLEM = "urn:orchgate:problem:"
DAG = "/airflow/api/v2/dags/team_a_etl"
DEPLOYERS = ("team-a-deployers",)
# Headers that claim an identity, an address or a route: none may reach the upstream as sent.
SPOOFABLE = ("forwarded", "x-real-ip", "x-forwarded-user", "x-forwarded-email",
             "x-forwarded-prefix", "x-forwarded-port", "x-forwarded-server", "x-orchgate-user",
             "x-orchgate-principal", "x-orchgate-decision", "x-remote-user", "remote-user",
             "x-user", "x-email", "x-auth-request-user", "x-auth-request-email",
             "true-client-ip", "x-client-ip", "client-ip", "x-cluster-client-ip",
             "x-original-url", "x-rewrite-url", "x-original-uri", "x-http-method-override",
             "x-http-method", "x-method-override", "prefect-automation-id",
             "prefect-automation-name", "cookie", "proxy-authorization", "x-forwarded-for-x")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header: dict[str, Any], claims: dict[str, Any],
          sign: Callable[[bytes], bytes] = lambda _: b"") -> str:
    """A compact JWS with any header, any claims and any signature function."""
    signing_input = (b64url(json.dumps(header).encode()) + "."
                     + b64url(json.dumps(claims).encode()))
    return signing_input + "." + b64url(sign(signing_input.encode("ascii")))


def hs256(key: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(key, data, hashlib.sha256).digest()


@dataclass
class Kit:
    gate: Orchgate
    upstream: RecordingUpstream
    idp: FakeIdP
    other_idp: FakeIdP
    minted: list[str] = field(default_factory=list)
    last: RawResponse | None = None  # the answer of the case being checked

    # tokens

    def token(self, sub: str = "alice", groups: Sequence[str] = DEPLOYERS, **claims: Any) -> str:
        token = self.idp.token(sub, groups=groups, **claims)
        self.minted.append(token)
        return token

    def alice(self) -> str:
        return self.token()

    def claims(self, **extra: Any) -> dict[str, Any]:
        """alice's claims; `extra` adds or replaces claims, None removes one."""
        claims = self.idp.claims("alice", groups=DEPLOYERS)
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def signed(self, claims: dict[str, Any], **kwargs: Any) -> str:
        token = self.idp.sign(claims, **kwargs)
        self.minted.append(token)
        return token

    def forged(self, header: dict[str, Any], claims: dict[str, Any] | None = None,
               sign: Callable[[bytes], bytes] = lambda _: b"") -> str:
        token = forge({"typ": "at+jwt", "kid": self.idp.kid, **header},
                      self.claims() if claims is None else claims, sign)
        self.minted.append(token)
        return token

    def rs256(self) -> Callable[[bytes], bytes]:
        """Sign with the issuer's real key, for headers or claims pyjwt refuses to encode."""
        key = self.idp.keys[self.idp.kid]
        return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def public_pem(self) -> bytes:
        return self.idp.keys[self.idp.kid].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    # requests

    def raw(self, method: str = "GET", target: bytes | str = DAG,
            headers: Sequence[tuple[str, str] | bytes] = (), body: bytes = b"",
            who: str | None = "alice", host: bytes | None = None) -> bytes:
        """One HTTP/1.1 request, byte for byte, with `Authorization: Bearer` + alice's token
        (`who="alice"`), + `who` itself (any other string), or none (None). A header given as
        bytes is sent as is (a line without its CRLF)."""
        target = target.encode("latin-1") if isinstance(target, str) else target
        lines = [method.encode() + b" " + target + b" HTTP/1.1",
                 b"Host: " + (host if host is not None else f"127.0.0.1:{self.gate.port}".encode())]
        if who is not None:
            value = self.alice() if who == "alice" else who
            lines.append(b"Authorization: Bearer " + value.encode("latin-1"))
        for h in headers:
            lines.append(h if isinstance(h, bytes) else f"{h[0]}: {h[1]}".encode("latin-1"))
        if body and not any((isinstance(h, tuple) and h[0].lower() in (
                "content-length", "transfer-encoding"))
                or (isinstance(h, bytes) and h.lower().startswith(
                    (b"content-length", b"transfer-encoding"))) for h in headers):
            lines.append(f"Content-Length: {len(body)}".encode())
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def send(self, data: bytes, timeout: float = 5.0) -> RawResponse:
        return self.gate.exchange(data, timeout)

    def forwarded(self) -> list[Received]:
        """What reached the upstream, readiness probes aside."""
        self.upstream.wait_idle()
        return [r for r in self.upstream.requests() if r.path not in HEALTH_PATHS]

    def http(self) -> httpx2.Client:
        return self.gate.client()

    # checks

    def assert_ready(self) -> None:
        with self.gate.client() as client:
            ready = client.get("/_orchgate/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"

    def assert_sanitized(self, seen: Received, target: str, request_id: str,
                         system: str = "airflow") -> None:
        """The one request the upstream got: the path as sent, orchgate's credential only, no
        caller credential or identity claim, orchgate's forwarding facts and request id."""
        assert seen.target == target, seen.target
        [authorization] = seen.all("authorization")
        if system == "airflow":
            scheme, _, credential = authorization.partition(" ")
            assert scheme == "Bearer"
            claims = jwt.decode(credential, self.gate.airflow_secret, algorithms=["HS512"],
                                audience="apache-airflow")
            assert claims["sub"] == "alice"
        else:
            basic = base64.b64encode(self.gate.prefect_auth.encode()).decode()
            assert authorization == f"Basic {basic}"
        dumped = json.dumps(seen.headers)
        for token in self.minted:
            assert token not in dumped
        assert not seen.header_names & set(SPOOFABLE), seen.header_names & set(SPOOFABLE)
        assert seen.all("x-forwarded-for") == ["127.0.0.1"]
        assert seen.all("x-forwarded-proto") == ["http"]
        assert seen.all("x-request-id") == [request_id]
        assert not [n for n in seen.header_names if n.startswith("x-orchgate")]

    def audit_count(self) -> int:
        return len(self.gate.audit_records())


Forwarded = Callable[[Kit, Received, str], None]


@dataclass(frozen=True)
class Case:
    """One hostile request and what must come of it."""

    id: str
    build: Callable[[Kit], bytes]
    status: int
    problem: str | None = None  # orchgate's problem type; None: not checked (or forwarded)
    forwarded: Forwarded | None = None  # None: the upstream must receive nothing
    parser: bool = False  # refused by the HTTP parser before orchgate runs


def run_case(kit: Kit, case: Case) -> None:
    before = kit.audit_count()
    response = kit.last = kit.send(case.build(kit))
    assert response.status == case.status, response.raw[:400]
    headers = dict(response.headers)
    seen = kit.forwarded()
    if case.parser:
        assert "x-request-id" not in headers
        assert seen == []
        # Refused before orchgate ran (nothing to audit), or — when the head parsed and the
        # body did not — recorded as a caller gone before its body arrived, never forwarded.
        for record in kit.gate.audit_records()[before:]:
            assert (record["status"], record["upstream_status"]) == (400, None), record
        kit.assert_ready()
        return
    request_id = headers["x-request-id"]
    if case.forwarded is None:
        assert seen == [], [r.target for r in seen]
    else:
        assert len(seen) == 1, [r.target for r in seen]
        case.forwarded(kit, seen[0], request_id)
    if case.problem is not None:
        assert headers["content-type"] == "application/problem+json"
        problem = json.loads(response.body)
        assert problem["type"] == PROBLEM + case.problem, problem
        assert problem["request_id"] == request_id
    record = kit.gate.audit_record(request_id)
    assert record["status"] == case.status
    if case.forwarded is None:
        assert record["upstream_status"] is None
        if case.problem is not None:
            assert record["problem"] == case.problem
    else:
        assert record["decision"] == "allow"
        assert record["upstream_status"] is not None
    text = json.dumps(record) + response.raw.decode("latin-1")
    for token in kit.minted:
        assert token not in text  # never a token in the audit trail or an answer
    kit.assert_ready()
