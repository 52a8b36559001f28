"""proxy.credentials: per-caller Airflow JWTs and the rotated Prefect auth string."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from proxy.catalog.operation import Action
from proxy.credentials.airflow import ROLE_FOR_ACTION, AirflowTokens
from proxy.credentials.prefect import PrefectAuth
from proxy.settings import AirflowCredential, SecretRef

SECRET = "airflow-jwt-secret-of-a-reasonable-length-for-hs512-0123456789abcdef"
SECRET_ENV = "ORCHGATE_TEST_AIRFLOW_JWT_SECRET"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def env_secret(monkeypatch: pytest.MonkeyPatch) -> SecretRef:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SecretRef(env=SECRET_ENV)


def credential(secret: SecretRef, lifetime: int = 120, issuer: str | None = None
               ) -> AirflowCredential:
    return AirflowCredential(mode="jwt-hs512", signing_secret=secret, lifetime_seconds=lifetime,
                             issuer=issuer)


def bearer(header: bytes) -> str:
    scheme, _, token = header.decode().partition(" ")
    assert scheme == "Bearer"
    return token


def decode(token: str, secret: str = SECRET, **kw: Any) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, secret, algorithms=["HS512"], audience="apache-airflow",
        options={"require": ["sub", "role", "aud", "iat", "nbf", "exp", "jti"]}, **kw)
    return claims


def test_a_minted_token_verifies_with_the_secret_and_carries_the_claims(
        env_secret: SecretRef, clock: FakeClock) -> None:
    tokens = AirflowTokens(credential(env_secret, lifetime=90), clock=clock)

    token = bearer(tokens.header("alice@example.com", Action.RUN))

    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    claims = decode(token)
    assert claims["sub"] == "alice@example.com"
    assert claims["role"] == "user"
    assert claims["aud"] == "apache-airflow"
    assert claims["iat"] == claims["nbf"] == int(clock.now)
    assert claims["exp"] - claims["iat"] == 90
    assert len(claims["jti"]) == 32
    assert "iss" not in claims


def test_a_token_signed_with_another_secret_is_refused_by_airflow(
        env_secret: SecretRef, clock: FakeClock) -> None:
    token = bearer(AirflowTokens(credential(env_secret), clock=clock).header("a", Action.READ))

    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, secret="not-the-secret-" * 5)


def test_the_issuer_claim_is_set_when_configured(env_secret: SecretRef, clock: FakeClock
                                                 ) -> None:
    tokens = AirflowTokens(credential(env_secret, issuer="orchgate"), clock=clock)

    claims = decode(bearer(tokens.header("alice", Action.READ)), issuer="orchgate")

    assert claims["iss"] == "orchgate"


@pytest.mark.parametrize("lifetime", [10, 120, 300])
def test_the_lifetime_is_the_configured_one_at_most(env_secret: SecretRef, clock: FakeClock,
                                                    lifetime: int) -> None:
    tokens = AirflowTokens(credential(env_secret, lifetime=lifetime), clock=clock)

    claims = decode(bearer(tokens.header("alice", Action.READ)))

    assert 0 < claims["exp"] - claims["iat"] <= lifetime


@pytest.mark.parametrize(("action", "role"), [
    (Action.READ, "viewer"), (Action.RUN, "user"), (Action.DEPLOY, "op"),
    (Action.ADMIN, "admin"),
])
def test_the_role_is_the_smallest_that_allows_the_action(
        env_secret: SecretRef, clock: FakeClock, action: Action, role: str) -> None:
    tokens = AirflowTokens(credential(env_secret), clock=clock)

    assert decode(bearer(tokens.header("alice", action)))["role"] == role


def test_every_action_has_a_role_airflow_knows() -> None:
    # Any other role value makes Airflow answer 500 (SimpleAuthManager, DESIGN.md §4).
    assert set(ROLE_FOR_ACTION) == set(Action)
    assert set(ROLE_FOR_ACTION.values()) == {"viewer", "user", "op", "admin"}


def test_a_token_is_reused_until_half_its_life_then_reminted(env_secret: SecretRef,
                                                            clock: FakeClock) -> None:
    tokens = AirflowTokens(credential(env_secret, lifetime=120), clock=clock)
    start = clock.now

    first = tokens.header("alice", Action.RUN)
    clock.now = start + 59.9
    assert tokens.header("alice", Action.RUN) == first
    clock.now = start + 60
    second = tokens.header("alice", Action.RUN)

    assert second != first
    claims = decode(bearer(second), leeway=600)
    assert claims["iat"] == int(start + 60)
    assert decode(bearer(first))["jti"] != claims["jti"]


def test_tokens_are_per_caller_and_per_role(env_secret: SecretRef, clock: FakeClock) -> None:
    tokens = AirflowTokens(credential(env_secret), clock=clock)

    alice_read = tokens.header("alice", Action.READ)
    alice_run = tokens.header("alice", Action.RUN)
    bob_read = tokens.header("bob", Action.READ)

    assert len({alice_read, alice_run, bob_read}) == 3
    assert decode(bearer(bob_read))["sub"] == "bob"
    assert tokens.header("alice", Action.READ) == alice_read


def test_a_rotated_secret_file_signs_the_next_mint(tmp_path: Path, clock: FakeClock) -> None:
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    tokens = AirflowTokens(credential(SecretRef(file=secret_file), lifetime=60), clock=clock)
    first = bearer(tokens.header("alice", Action.READ))
    assert decode(first)["sub"] == "alice"  # the trailing newline is not part of the key

    rotated = "rotated-" + SECRET
    secret_file.write_text(rotated, encoding="utf-8")
    clock.now += 30
    second = bearer(tokens.header("alice", Action.READ))

    assert decode(second, secret=rotated, leeway=600)["sub"] == "alice"
    with pytest.raises(jwt.InvalidSignatureError):
        decode(second)


# ---------------------------------------------------------------------------------------------
# Prefect


def basic(value: str) -> bytes:
    return b"Basic " + base64.b64encode(value.encode())


def rewrite(path: Path, text: str, bump: int) -> None:
    """Rewrite the file and move its mtime by `bump` seconds, so the change is always seen."""
    before = path.stat()
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + bump * 1_000_000_000))


def test_the_prefect_header_is_basic_of_the_file_content(tmp_path: Path) -> None:
    secret_file = tmp_path / "prefect-auth"
    secret_file.write_text("admin:pass:with:colons\n", encoding="utf-8")

    auth = PrefectAuth(SecretRef(file=secret_file))

    assert auth.header() == basic("admin:pass:with:colons")
    assert auth.auth_string() == "admin:pass:with:colons"


def test_a_rewritten_file_is_picked_up_without_a_new_object(tmp_path: Path) -> None:
    secret_file = tmp_path / "prefect-auth"
    secret_file.write_text("admin:old", encoding="utf-8")
    auth = PrefectAuth(SecretRef(file=secret_file))
    assert auth.header() == basic("admin:old")

    rewrite(secret_file, "admin:new", bump=1)  # the same size: only the mtime tells

    assert auth.header() == basic("admin:new")
    assert auth.auth_string() == "admin:new"


def test_an_empty_file_mid_rewrite_keeps_the_old_value(tmp_path: Path) -> None:
    secret_file = tmp_path / "prefect-auth"
    secret_file.write_text("admin:old", encoding="utf-8")
    auth = PrefectAuth(SecretRef(file=secret_file))

    rewrite(secret_file, "", bump=1)
    assert auth.header() == basic("admin:old")
    assert auth.auth_string() == "admin:old"

    rewrite(secret_file, "admin:rotated\n", bump=2)
    assert auth.header() == basic("admin:rotated")


def test_the_prefect_auth_string_can_come_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHGATE_TEST_PREFECT_AUTH", "admin:from-env")

    auth = PrefectAuth(SecretRef(env="ORCHGATE_TEST_PREFECT_AUTH"))

    assert auth.header() == basic("admin:from-env")
