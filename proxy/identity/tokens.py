"""Bearer tokens (RFC 6750) → verified JWT access tokens (RFC 7519, RFC 9068) → `Principal`.

Verification follows the JWT BCP (RFC 8725): the issuer is chosen by an exact ``iss`` match,
the algorithm comes from that issuer's fixed allow-list, the key from that issuer's own key set,
and headers that would make us fetch or trust a key named by the token are refused.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
import jwt

from proxy.identity.jwks import JwksCache, KeyNotFound, SigningKey
from proxy.identity.principal import Principal
from proxy.settings import ALLOWED_ALGORITHMS, IssuerSettings

MAX_TOKEN_BYTES = 8 * 1024
MAX_GROUPS = 256
MAX_CLAIM_CHARS = 256  # sub, client_id, email and each group name
CACHE_SIZE = 10_000

# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
# RFC 7515 §7.1: the compact serialization is three base64url parts without padding (§2).
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]*")  # empty is left to the algorithm check (`alg: none`)
# A token naming its own key or extensions we must understand is refused, never followed
# (RFC 8725 §3.10; RFC 7515 §4.1.2-4.1.6 and §4.1.11).
_FORBIDDEN_HEADERS = ("jku", "jwk", "x5u", "x5c", "crit")
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]

ErrorCode = Literal["", "invalid_request", "invalid_token"]


class AuthError(Exception):
    """Authentication failed.

    ``error`` is the RFC 6750 §3.1 code, or ``""`` when the request carried no bearer credentials
    at all (no header, or another scheme such as Basic): §3.1 says to send no error code then.
    ``description`` is a short reason that never contains the token.
    """

    def __init__(self, error: ErrorCode, description: str) -> None:
        super().__init__(f"{error}: {description}" if error else description)
        self.error: ErrorCode = error
        self.description = description

    @property
    def status_code(self) -> int:
        return 400 if self.error == "invalid_request" else 401  # RFC 6750 §3.1

    def challenge(self, realm: str = "orchgate") -> str:
        """The ``WWW-Authenticate`` value (RFC 6750 §3); descriptions are plain ASCII text."""
        if not self.error:
            return f'Bearer realm="{realm}"'
        return (f'Bearer realm="{realm}", error="{self.error}", '
                f'error_description="{self.description}"')


def _invalid(description: str) -> AuthError:
    return AuthError("invalid_token", description)


def bearer_token(values: list[bytes]) -> str:
    """The token from all raw ``Authorization`` header values of a request."""
    if not values:
        raise AuthError("", "missing bearer token")
    if len(values) > 1:
        raise AuthError("invalid_request", "more than one Authorization header")
    raw = values[0].strip(b" \t")  # surrounding whitespace is not part of a value (RFC 9110 §5.5)
    scheme, _, token = raw.partition(b" ")
    if not scheme:
        raise AuthError("invalid_request", "empty Authorization header")
    if scheme.lower() != b"bearer":  # auth schemes are case-insensitive (RFC 7235 §2.1)
        raise AuthError("", "authorization scheme is not Bearer")
    token = token.lstrip(b" ")
    if not token:
        raise AuthError("invalid_request", "empty bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError("invalid_request", "bearer token too long")
    if not _B64TOKEN.fullmatch(token):
        raise AuthError("invalid_request", "malformed bearer token")
    return token.decode("ascii")


@dataclass(frozen=True, slots=True)
class _Issuer:
    settings: IssuerSettings
    algorithms: frozenset[str]
    keys: JwksCache


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    kid: str


class TokenVerifier:
    """Verifies access tokens from a fixed set of trusted issuers; caches results until ``exp``."""

    def __init__(self, issuers: Sequence[IssuerSettings], http: httpx2.AsyncClient,
                 clock: Callable[[], float] = time.time, *,
                 jwks_clock: Callable[[], float] = time.monotonic,
                 cache_size: int = CACHE_SIZE) -> None:
        self._issuers: dict[str, _Issuer] = {}
        for issuer in issuers:
            algorithms = frozenset(issuer.algorithms) & ALLOWED_ALGORITHMS
            if not algorithms or not issuer.audiences:
                raise ValueError(f"issuer {issuer.issuer}: needs audiences and algorithms")
            self._issuers[issuer.issuer] = _Issuer(issuer, algorithms,
                                                   JwksCache(issuer, http, jwks_clock))
        self._clock = clock
        self._cache: dict[bytes, _Verified] = {}
        self._cache_size = cache_size

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before, while `verify` would answer it from its
        cache at once: not expired, its key still in its issuer's set, the set not due for a
        refresh. None: only `verify` can tell (it may fetch keys or check the signature)."""
        if not token.isascii():
            return None
        hit = self._cache.get(hashlib.sha256(token.encode("ascii")).digest())
        if (hit is None or self._clock() >= hit.principal.expires_at
                or self._issuers[hit.principal.issuer].keys.known(hit.kid) is None):
            return None
        return hit.principal

    async def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise _invalid("malformed token")
        # Keyed on a digest: a cache of live bearer tokens would be worth stealing from memory.
        digest = hashlib.sha256(token.encode("ascii")).digest()
        hit = self._cache.get(digest)
        if hit is not None:
            if self._clock() < hit.principal.expires_at:
                # The key must still be in its issuer's set: a removed key stops working for
                # cached tokens too (and this keeps the periodic key refresh going).
                try:
                    await self._key(self._issuers[hit.principal.issuer], hit.kid)
                except AuthError:
                    self._cache.pop(digest, None)
                    raise
                return hit.principal
            self._cache.pop(digest, None)
        verified = await self._verify(token)
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)), None)  # oldest first (insertion order)
        self._cache[digest] = verified
        return verified.principal

    @property
    def ready(self) -> bool:
        """Every issuer has usable keys."""
        return all(i.keys.usable() for i in self._issuers.values())

    def status(self) -> dict[str, object]:
        return {"ready": self.ready,
                "issuers": {name: i.keys.status() for name, i in self._issuers.items()}}

    async def warm(self) -> None:
        await asyncio.gather(*(i.keys.warm() for i in self._issuers.values()))

    # -- internals ---------------------------------------------------------------------------

    async def _verify(self, token: str) -> _Verified:
        header, claims = _unverified(token)
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise _invalid(f"token header field {name} not allowed")
        # The unverified `iss` only chooses whose keys to try; RFC 7519 §4.1.1 and §2 (StringOrURI):
        # compared as exact, case-sensitive strings — no prefix, suffix or normalisation.
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise _invalid("issuer claim missing or not a string")
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise _invalid("untrusted issuer")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:  # RFC 8725 §3.1
            raise _invalid("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid("token has no key id")
        key = await self._key(issuer, kid)
        if not key.accepts(alg):
            raise _invalid("signing key does not match algorithm")
        s = issuer.settings
        try:
            # The loaded key object, not a PEM (DESIGN §2), and only the header's algorithm,
            # already checked against the allow-list. `audience` is a list: a token whose `aud`
            # is a list passes when any entry is ours (pyjwt's rule, RFC 7519 §4.1.3).
            payload: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[alg], issuer=s.issuer, audience=list(s.audiences),
                leeway=s.leeway_seconds,
                options={"require": _REQUIRED_CLAIMS, "enforce_minimum_key_length": True})
        except jwt.PyJWTError as exc:
            raise _invalid(_reason(exc)) from None
        # pyjwt reads the wall clock; our clock is the one the cache trusts, so check it too.
        exp = payload["exp"]
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise _invalid("malformed exp claim")  # a NumericDate is a JSON number (RFC 7519 §2)
        if exp <= self._clock() - s.leeway_seconds:
            raise _invalid("token expired")
        return _Verified(_principal(payload, s, float(exp)), kid)

    async def _key(self, issuer: _Issuer, kid: str) -> SigningKey:
        try:
            return await issuer.keys.get(kid)
        except KeyNotFound:
            raise _invalid("unknown signing key") from None


def _reason(exc: jwt.PyJWTError) -> str:
    """A short, safe reason for a pyjwt failure (its own messages may quote claim values)."""
    if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim in _REQUIRED_CLAIMS:
        return f"token has no {exc.claim} claim"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "malformed token"


_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "audience not accepted"),
    (jwt.InvalidIssuerError, "untrusted issuer"),
    (jwt.InvalidSignatureError, "signature invalid"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidKeyError, "signing key does not match algorithm"),
    (jwt.exceptions.InvalidSubjectError, "subject claim must be a string"),
)


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, before any check: used only to choose the issuer, algorithm and key."""
    parts = token.split(".")
    if len(parts) != 3 or not (_SEGMENT.fullmatch(parts[0]) and _SEGMENT.fullmatch(parts[1])
                               and _SIGNATURE.fullmatch(parts[2])):
        raise _invalid("malformed token")  # also a JWE (five parts): not accepted here
    return _json_segment(parts[0]), _json_segment(parts[1])


def _json_segment(segment: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)),
                          object_pairs_hook=_unique_members, parse_float=_finite,
                          parse_constant=_no_constant)
    except (binascii.Error, ValueError, RecursionError):
        raise _invalid("malformed token") from None
    if not isinstance(data, dict):
        raise _invalid("malformed token")
    return data


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §5.2 / RFC 7519 §7.2: duplicate member names are rejected rather than guessed at.
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("duplicate member name")
    return data


def _finite(text: str) -> float:
    # NaN, Infinity and 1e400 are not JSON numbers (RFC 8259 §6) and would overflow
    # pyjwt's int() of a NumericDate.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON")


def _principal(claims: dict[str, Any], issuer: IssuerSettings, exp: float) -> Principal:
    sub = claims["sub"]  # pyjwt checked: present and a string
    if not sub or len(sub) > MAX_CLAIM_CHARS:
        raise _invalid("subject claim empty or too long")
    # RFC 9068 §2.2 `client_id`; `azp` (OIDC Core §2) when an IdP does not send client_id.
    client_id = _short_string(claims["client_id"] if "client_id" in claims
                              else claims.get("azp"))
    # A client_credentials token's subject is the client itself (RFC 9068 §2.2): a service.
    kind: Literal["user", "service"] = "service" if sub == client_id else "user"
    return Principal(sub=sub, issuer=issuer.issuer, kind=kind,
                     groups=_groups(claims, issuer.groups_claim), client_id=client_id,
                     expires_at=exp, email=_short_string(claims.get("email")))


def _short_string(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_CLAIM_CHARS else None


def _groups(claims: dict[str, Any], path: str) -> tuple[str, ...]:
    """Groups at a dotted claim path (``realm_access.roles``); a claim whose own name contains
    dots (``https://example.com/groups``) is taken as is. Anything but a list of strings: none."""
    value: object = claims.get(path)
    if path not in claims:
        value = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        return ()
    # Too many or too long is refused, not truncated: a dropped group could be one a deny names.
    if len(value) > MAX_GROUPS or any(len(g) > MAX_CLAIM_CHARS for g in value):
        raise _invalid("groups claim too large")
    return tuple(dict.fromkeys(g for g in value if g))
