"""Airflow API credentials: per-caller short-lived JWTs, or a service account's token.

Airflow's API server accepts a JWT whose claims are `sub`, `role`, `exp`, `iat`, `nbf`, `aud`
(+ `iss` when `[api_auth] jwt_issuer` is set): airflow/api_fastapi/auth/tokens.py
(JWTValidator) and SimpleAuthManager.deserialize_user in apache-airflow 3.3.2. Two ways to
sign one for each caller, as Airflow can verify them:

- `jwt-hs512`: with `[api_auth] jwt_secret`;
- `jwt-rs256`: with an RSA private key and a `kid`; Airflow verifies it with the JWKS at
  `[api_auth] trusted_jwks_url`, which orchgate serves (`/_orchgate/airflow/jwks.json`, the
  public key plus any `jwks_extra_file` keys, e.g. Airflow's own when it signs with another).
  The default `kid` is the thumbprint Airflow itself computes (tokens.py `thumbprint` over the
  JWK), so Airflow may sign with the same key file and keep its default `kid`.

Airflow then records the caller as `triggering_user_name`. The role is the smallest that allows
the decided action, so the upstream grants no more than orchgate decided. Tokens live at most
5 minutes and are reused until half their life has passed; minting is synchronous (no await
between the cache check and the mint), so concurrent requests never mint twice.

`password`: for sites that will not share a signing key, one service account's token from
`POST /auth/token` (username and password), refreshed by one background task at half its
life (single flight by construction); Airflow then records the service account, orchgate's
audit records the caller.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import RSAAlgorithm

from proxy import metrics
from proxy.catalog.operation import Action
from proxy.errors import Reject
from proxy.settings import AirflowCredential

ROLE_FOR_ACTION = {Action.READ: "viewer", Action.RUN: "user", Action.DEPLOY: "op",
                   Action.ADMIN: "admin"}
RETRY_SECONDS = 5.0


def thumbprint(jwk: dict[str, Any]) -> str:
    """The `kid` Airflow derives from a key (airflow/api_fastapi/auth/tokens.py)."""
    digest = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


class AirflowTokens:
    """Per-caller tokens, signed with the shared secret (HS512) or a private key (RS256)."""

    def __init__(self, settings: AirflowCredential,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._pem = ""
        self._key: RSAPrivateKey | None = None
        self._kid = ""
        self._retired: tuple[dict[str, Any], float] | None = None  # the previous public key
        if settings.mode == "jwt-rs256":
            self._load_key()  # a bad key stops start-up, not the first request

    def header(self, caller: str, action: Action) -> bytes:
        """The `Authorization` value for this caller and action (minted or reused)."""
        role = ROLE_FOR_ACTION[action]
        now = self._clock()
        cached = self._cache.get((caller, role))
        if cached is not None and cached[1] > now:
            return cached[0].encode()
        lifetime = self._settings.lifetime_seconds
        claims: dict[str, object] = {
            "sub": caller, "role": role, "aud": self._settings.audience,
            "iat": int(now), "nbf": int(now), "exp": int(now) + lifetime,
            "jti": uuid.uuid4().hex,
        }
        if self._settings.issuer:
            claims["iss"] = self._settings.issuer
        value = f"Bearer {self._sign(claims)}"
        metrics.CREDENTIAL_MINTS.labels("airflow", self._settings.mode).inc()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(caller, role)] = (value, now + lifetime / 2)
        return value.encode()

    def _sign(self, claims: dict[str, object]) -> str:
        if self._settings.mode == "jwt-rs256":
            key = self._load_key()
            return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self._kid})
        # The secret is read per mint, not kept: a rotated file takes effect at the next mint.
        assert self._settings.signing_secret is not None
        return jwt.encode(claims, self._settings.signing_secret.read(), algorithm="HS512")

    def _load_key(self) -> RSAPrivateKey:
        """The private key, re-parsed only when the file's content changed (rotation)."""
        assert self._settings.signing_key is not None
        pem = self._settings.signing_key.read()
        if pem != self._pem or self._key is None:
            key = load_pem_private_key(pem.encode(), password=None)
            if not isinstance(key, RSAPrivateKey):
                raise ValueError("the Airflow signing key must be an RSA private key")
            if self._key is not None:
                # Rotation: tokens signed with the old key stay valid for their lifetime, so
                # its public half stays published that long.
                self._retired = (self._published(self._key, self._kid),
                                 self._clock() + self._settings.lifetime_seconds)
            self._key, self._pem = key, pem
            self._kid = self._settings.key_id or thumbprint(self._public_jwk(key))
            if self._retired is not None and self._retired[0]["kid"] == self._kid:
                self._retired = None  # a fixed key_id cannot tell two keys apart
                self._cache.clear()
        return self._key

    @staticmethod
    def _public_jwk(key: RSAPrivateKey) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return jwk

    def _published(self, key: RSAPrivateKey, kid: str) -> dict[str, Any]:
        return {**self._public_jwk(key), "kid": kid, "alg": "RS256", "use": "sig"}

    def jwks(self) -> dict[str, Any] | None:
        """The JWKS Airflow trusts (RFC 7517): public keys only; None unless RS256."""
        if self._settings.mode != "jwt-rs256":
            return None
        keys = [self._published(self._load_key(), self._kid)]
        if self._retired is not None and self._retired[1] > self._clock():
            keys.append(self._retired[0])
        if self._settings.jwks_extra is not None:
            extra = json.loads(self._settings.jwks_extra.read_text(encoding="utf-8"))
            keys += [k for k in extra.get("keys", []) if isinstance(k, dict) and "d" not in k]
        return {"keys": keys}


Post = Callable[[bytes, bytes], Awaitable[tuple[int, Any]]]


class AirflowServiceToken:
    """One service account's token from `POST /auth/token`, kept fresh in the background."""

    def __init__(self, settings: AirflowCredential, post: Post,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._post = post
        self._clock = clock
        self._value = b""
        self._expires = 0.0
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

    @property
    def ready(self) -> bool:
        return bool(self._value) and self._expires > self._clock()

    def header(self, caller: str, action: Action) -> bytes:
        """The service account's `Authorization` value, whoever the caller is."""
        if not self.ready:
            raise Reject(503, "upstream-credential-unavailable", "Upstream credential unavailable",
                         "orchgate holds no valid Airflow token right now; try again later",
                         headers=((b"retry-after", b"5"),))
        return self._value

    async def refresh(self) -> None:
        """Exchange the username and password for a token (one exchange at a time)."""
        async with self._lock:
            if self._value and self._refresh_at > self._clock():
                return  # another caller refreshed it meanwhile
            assert self._settings.password is not None
            body = json.dumps({"username": self._settings.username,
                               "password": self._settings.password.read()}).encode()
            status, data = await self._post(b"/auth/token", body)
            token = data.get("access_token") if isinstance(data, dict) else None
            if status not in (200, 201) or not isinstance(token, str):
                self.last_error = f"POST /auth/token answered HTTP {status}"
                raise RuntimeError(self.last_error)
            claims = jwt.decode(token, options={"verify_signature": False})
            now = self._clock()
            self._expires = float(claims.get("exp", now + 60))
            self._refresh_at = now + max(1.0, (self._expires - now) / 2)
            self._value = f"Bearer {token}".encode()
            metrics.CREDENTIAL_MINTS.labels("airflow", self._settings.mode).inc()
            self.last_error = None

    async def keep_fresh(self) -> None:
        """The refresher: runs for the app's lifetime; a failure retries, never stops it."""
        while True:
            try:
                await self.refresh()
                delay = max(1.0, self._refresh_at - self._clock())
            except (RuntimeError, Reject, OSError, ValueError, jwt.PyJWTError):
                delay = RETRY_SECONDS
            await asyncio.sleep(delay)
