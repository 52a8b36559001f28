"""Per-caller, short-lived Airflow API tokens (Airflow 3 SimpleAuthManager JWTs).

Airflow's API server accepts a JWT signed with `[api_auth] jwt_secret` (HS512) whose claims
are `sub`, `role`, `exp`, `iat`, `nbf`, `aud` (+ `iss` when `[api_auth] jwt_issuer` is set):
see airflow/api_fastapi/auth/tokens.py (JWTValidator) and SimpleAuthManager.deserialize_user
in apache-airflow 3.3.2. Airflow then records the caller as `triggering_user_name`. The role
is the smallest that allows the decided action, so the upstream grants no more than orchgate
decided. Tokens live at most 5 minutes and are reused until half their life has passed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import jwt

from proxy.catalog.operation import Action
from proxy.settings import AirflowCredential

ROLE_FOR_ACTION = {Action.READ: "viewer", Action.RUN: "user", Action.DEPLOY: "op",
                   Action.ADMIN: "admin"}


class AirflowTokens:
    def __init__(self, settings: AirflowCredential,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}

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
        # The secret is read per mint, not kept: a rotated file takes effect at the next mint.
        token = jwt.encode(claims, self._settings.signing_secret.read(), algorithm="HS512")
        value = f"Bearer {token}"
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(caller, role)] = (value, now + lifetime / 2)
        return value.encode()
