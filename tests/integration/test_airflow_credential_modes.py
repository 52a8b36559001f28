"""The other Airflow credential modes against the real Airflow 3.3.2.

The session stack runs HS512 (deploy/local); no second Airflow is started. RS256 tokens are
checked by Airflow's own validator (airflow/api_fastapi/auth/tokens.py JWTValidator, as the API
server builds it for `[api_auth] trusted_jwks_url`) against the JWKS orchgate serves; the
password exchange runs against the live API server's `POST /auth/token`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from devstack import LocalStack
from upstreams import AIRFLOW_VENV

from proxy.catalog.operation import Action
from proxy.credentials.airflow import AirflowServiceToken, AirflowTokens
from proxy.settings import AirflowCredential, Limits, SecretRef, UpstreamSettings
from proxy.upstream.forward import Upstream

VALIDATE = """
import asyncio, json, sys
from airflow.api_fastapi.auth.tokens import JWKS, JWTValidator
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
validator = JWTValidator(jwks=JWKS(url=sys.argv[1]), audience="apache-airflow", leeway=10)
claims = asyncio.run(validator.avalidated_claims(sys.argv[2]))
user = SimpleAuthManager().deserialize_user(claims)
print(json.dumps({"sub": claims["sub"], "name": user.get_name(), "role": user.role}))
"""


def test_airflow_validates_rs256_tokens_with_the_jwks_orchgate_serves(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "orchgate-airflow.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    tokens = AirflowTokens(AirflowCredential(mode="jwt-rs256",
                                             signing_key=SecretRef(file=key_file),
                                             lifetime_seconds=60))
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(tokens.jwks()))
    token = tokens.header("alice", Action.DEPLOY).decode().removeprefix("Bearer ")

    done = subprocess.run(
        [str(AIRFLOW_VENV / "bin/python"), "-c", VALIDATE, str(jwks_file), token],
        env={"AIRFLOW_HOME": str(tmp_path / "airflow-home"), "PATH": "/usr/bin:/bin",
             "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple."
                                            "simple_auth_manager.SimpleAuthManager"},
        capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "sub": "alice", "name": "alice", "role": "op"}


def test_the_password_mode_exchanges_at_the_live_airflow(stack: LocalStack) -> None:
    passwords = json.loads((stack.airflow.home / "simple_auth_manager_passwords.json.generated")
                           .read_text())
    secret = stack.workdir / "secrets" / "airflow-admin-password"
    secret.write_text(passwords["admin"])
    settings = AirflowCredential(mode="password", username="admin",
                                 password=SecretRef(file=secret))

    async def exchange() -> bytes:
        upstream = Upstream(UpstreamSettings(name="airflow", url=stack.airflow.url,
                                             prefix="/airflow"), Limits())
        await upstream.start()
        try:
            async def post(path: bytes, body: bytes) -> tuple[int, object]:
                return await upstream.get_json(path, [], "POST", body)
            service = AirflowServiceToken(settings, post)
            await service.refresh()
            assert service.ready
            return service.header("alice", Action.READ)
        finally:
            await upstream.close()

    header = asyncio.run(exchange())
    response = httpx2.get(stack.airflow.api + "/dags", headers={"Authorization":
                                                                header.decode()},
                          timeout=30, trust_env=False)
    assert response.status_code == 200, response.text
    assert response.json()["total_entries"] >= 4
    # The service account's token, whoever the caller: Airflow records the account.
    claims = jwt.decode(header.decode().removeprefix("Bearer "),
                        options={"verify_signature": False})
    assert claims["sub"] == "admin"
