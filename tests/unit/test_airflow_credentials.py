"""Airflow credential modes: HS512 / RS256 per-caller tokens, the JWKS, the password exchange."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from proxy.catalog.operation import Action
from proxy.credentials.airflow import AirflowServiceToken, AirflowTokens, thumbprint
from proxy.errors import Reject
from proxy.settings import AirflowCredential, ConfigError, SecretRef, parse_settings


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "airflow-key.pem"
    path.write_text(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    return path


class Clock:
    def __init__(self) -> None:
        self.now = time.time()  # tokens are verified by pyjwt against the real clock

    def __call__(self) -> float:
        return self.now


def rs256(key_file: Path, **kw: Any) -> AirflowCredential:
    return AirflowCredential(mode="jwt-rs256", signing_key=SecretRef(file=key_file),
                             lifetime_seconds=60, **kw)


def verify(token_header: bytes, jwks: dict[str, Any]) -> dict[str, Any]:
    token = token_header.decode().removeprefix("Bearer ")
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["RS256"],
                                        audience="apache-airflow", leeway=300)
    return claims


def test_rs256_tokens_verify_against_the_served_jwks_with_airflows_default_kid(
        key_file: Path) -> None:
    clock = Clock()
    tokens = AirflowTokens(rs256(key_file), clock)
    jwks = tokens.jwks()
    assert jwks is not None

    claims = verify(tokens.header("alice", Action.RUN), jwks)

    assert (claims["sub"], claims["role"]) == ("alice", "user")
    assert claims["exp"] - claims["iat"] == 60
    public = {k: v for k, v in jwks["keys"][0].items() if k not in ("kid", "alg", "use")}
    assert jwks["keys"][0]["kid"] == thumbprint(public)
    assert all("d" not in k and "p" not in k for k in jwks["keys"])  # public halves only


def test_rs256_tokens_are_reused_for_half_their_life_then_reminted(key_file: Path) -> None:
    clock = Clock()
    tokens = AirflowTokens(rs256(key_file), clock)
    first = tokens.header("alice", Action.READ)
    clock.now += 29
    assert tokens.header("alice", Action.READ) == first
    assert tokens.header("alice", Action.DEPLOY) != first  # another role, another token
    clock.now += 2
    assert tokens.header("alice", Action.READ) != first


def test_a_rotated_key_keeps_the_old_public_key_published_while_its_tokens_live(
        key_file: Path) -> None:
    clock = Clock()
    tokens = AirflowTokens(rs256(key_file), clock)
    before = tokens.header("alice", Action.READ)
    old_kid = jwt.get_unverified_header(before.decode()[7:])["kid"]
    key_file.write_text(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))

    jwks = tokens.jwks()
    assert jwks is not None
    assert len({k["kid"] for k in jwks["keys"]}) == 2
    verify(before, jwks)  # a cached token of the old key still verifies
    clock.now += 31
    after = tokens.header("alice", Action.READ)
    assert jwt.get_unverified_header(after.decode()[7:])["kid"] != old_kid
    verify(after, jwks)
    clock.now += 60
    later = tokens.jwks()
    assert later is not None
    assert [k["kid"] for k in later["keys"]] != [old_kid]
    assert len(later["keys"]) == 1


def test_a_configured_kid_and_extra_public_keys_are_published(key_file: Path,
                                                              tmp_path: Path) -> None:
    extra = tmp_path / "airflow-own.json"
    extra.write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "airflow-own", "n": "x",
                                           "e": "AQAB"},
                                          {"kty": "RSA", "kid": "leaked", "d": "secret"}]}))
    tokens = AirflowTokens(rs256(key_file, key_id="orchgate-1", jwks_extra=extra), Clock())
    jwks = tokens.jwks()
    assert jwks is not None
    assert [k["kid"] for k in jwks["keys"]] == ["orchgate-1", "airflow-own"]
    verify(tokens.header("bob", Action.ADMIN), jwks)


def test_hs512_has_no_jwks(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x" * 64)
    tokens = AirflowTokens(AirflowCredential(mode="jwt-hs512",
                                             signing_secret=SecretRef(file=secret)))
    assert tokens.jwks() is None
    claims = jwt.decode(tokens.header("amy", Action.READ).decode()[7:], "x" * 64,
                        algorithms=["HS512"], audience="apache-airflow")
    assert claims["role"] == "viewer"


def test_a_non_rsa_key_stops_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match=r"deserialize|RSA"):
        AirflowTokens(rs256(bad))


# -- the password exchange -----------------------------------------------------------------


def service(clock: Clock, answers: list[tuple[int, Any]], tmp_path: Path
            ) -> tuple[AirflowServiceToken, list[dict[str, Any]]]:
    password = tmp_path / "pw"
    password.write_text("hunter2")
    sent: list[dict[str, Any]] = []

    async def post(path: bytes, body: bytes) -> tuple[int, Any]:
        assert path == b"/auth/token"
        sent.append(json.loads(body))
        await asyncio.sleep(0.01)
        return answers.pop(0)
    settings = AirflowCredential(mode="password", username="orchgate-svc",
                                 password=SecretRef(file=password))
    return AirflowServiceToken(settings, post, clock), sent


def airflow_token(exp: float) -> str:
    return jwt.encode({"sub": "orchgate-svc", "exp": int(exp)}, "k" * 32, algorithm="HS256")


def test_the_service_token_is_exchanged_once_for_concurrent_refreshes(tmp_path: Path) -> None:
    clock = Clock()
    token = airflow_token(clock.now + 3600)
    svc, sent = service(clock, [(201, {"access_token": token})], tmp_path)
    with pytest.raises(Reject) as unavailable:
        svc.header("alice", Action.READ)
    assert unavailable.value.status == 503

    async def scenario() -> None:
        await asyncio.gather(*(svc.refresh() for _ in range(5)))
    asyncio.run(scenario())

    assert sent == [{"username": "orchgate-svc", "password": "hunter2"}]
    assert svc.header("alice", Action.READ) == svc.header("bob", Action.ADMIN) == (
        b"Bearer " + token.encode())
    assert svc.ready


def test_a_failed_exchange_keeps_the_old_token_until_it_expires(tmp_path: Path) -> None:
    clock = Clock()
    token = airflow_token(clock.now + 100)
    svc, _ = service(clock, [(201, {"access_token": token}), (401, {"detail": "no"})],
                     tmp_path)
    asyncio.run(svc.refresh())
    clock.now += 60  # past half its life: due for refresh
    with pytest.raises(RuntimeError):
        asyncio.run(svc.refresh())
    assert svc.last_error == "POST /auth/token answered HTTP 401"
    assert "hunter2" not in str(svc.last_error)
    assert svc.header("alice", Action.READ) == b"Bearer " + token.encode()
    clock.now += 50
    assert not svc.ready


# -- settings ------------------------------------------------------------------------------


def settings_with(tmp_path: Path, credential: dict[str, Any]) -> dict[str, Any]:
    model = tmp_path / "model.conf"
    model.write_text("x")
    policy = tmp_path / "p.csv"
    policy.write_text("")
    return {"issuers": [{"issuer": "https://idp.test/", "audiences": ["orchgate"]}],
            "upstreams": {"airflow": {"url": "http://127.0.0.1:1", "credential": credential}},
            "policy": {"model": str(model), "files": [str(policy)]}}


def test_settings_accept_each_airflow_credential_mode(tmp_path: Path, key_file: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x")
    rs = parse_settings(settings_with(tmp_path, {"mode": "jwt-rs256",
                                                 "signing_key_file": str(key_file),
                                                 "key_id": "k1", "lifetime_seconds": 300}))
    cred = rs.upstreams[0].airflow
    assert cred is not None and cred.signing_key == SecretRef(file=key_file)
    assert (cred.key_id, cred.lifetime_seconds) == ("k1", 300)
    password = parse_settings(settings_with(tmp_path, {"mode": "password", "username": "svc",
                                                       "password_file": str(pw)}))
    assert password.upstreams[0].airflow is not None
    assert password.upstreams[0].airflow.username == "svc"


@pytest.mark.parametrize(("credential", "problem"), [
    ({"mode": "jwt-rs512", "signing_key_file": "k"}, "unknown mode 'jwt-rs512'"),
    ({"mode": "jwt-rs256"}, "signing_key: is required"),
    ({"mode": "jwt-rs256", "signing_secret_file": "s"}, "signing_secret_file: unknown key"),
    ({"mode": "password", "password_file": "pw"}, "username: is required"),
    ({"mode": "password", "username": "svc", "password": "inline"}, "never inline"),
    ({"mode": "jwt-hs512", "signing_secret": "env:X", "lifetime_seconds": 301},
     "at most 5 minutes"),
])
def test_settings_reject_bad_airflow_credentials(tmp_path: Path, credential: dict[str, Any],
                                                 problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(settings_with(tmp_path, credential))
    assert any(problem in p for p in err.value.problems), err.value.problems
