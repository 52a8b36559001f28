"""Authentication: bearer tokens from trusted OIDC issuers → `Principal`."""

from __future__ import annotations

from proxy.identity.jwks import JwksCache, JwksError, KeyNotFound, KeysUnavailable, SigningKey
from proxy.identity.principal import Principal
from proxy.identity.tokens import AuthError, TokenVerifier, bearer_token

__all__ = [
    "AuthError",
    "JwksCache",
    "JwksError",
    "KeyNotFound",
    "KeysUnavailable",
    "Principal",
    "SigningKey",
    "TokenVerifier",
    "bearer_token",
]
