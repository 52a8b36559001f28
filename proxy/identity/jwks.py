"""JSON Web Key Sets (RFC 7517 §5): an async cache of one issuer's signature keys.

Why our own (DESIGN §2): pyjwt's PyJWKClient blocks on urllib behind a lock, waits a 30 s
cooldown before refetching for an unknown ``kid`` and, with ``cache_keys=True``, keeps a key
the IdP removed forever. This cache

- refetches for an unknown ``kid`` at most once per cooldown window, single flight;
- refreshes a set older than ``jwks_refresh_seconds`` in the background, answering from the
  current set meanwhile (an IdP that hangs must not stall every request);
- keeps answering from the last good set for ``jwks_max_stale_seconds`` while the IdP is
  down, then fails closed;
- replaces the set on every successful fetch, so keys the IdP removed stop working;
- accepts only public signature keys for the issuer's algorithms and bounds what it reads.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from proxy import metrics
from proxy.settings import ALLOWED_ALGORITHMS, IssuerSettings

MAX_KEYS = 100
MAX_RESPONSE_BYTES = 256 * 1024
MIN_RSA_BITS = 2048  # NIST SP 800-131A; pyjwt only warns below this
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}  # RFC 7518 §3.4
# Members that only a private or symmetric JWK has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
_SECRET_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

log = structlog.get_logger("orchgate.identity")


class JwksError(Exception):
    """A key could not be provided."""


class KeyNotFound(JwksError):
    """The issuer's current key set has no key with this ``kid``."""


class KeysUnavailable(JwksError):
    """No usable key set: never fetched, or the IdP has been unreachable beyond max-stale."""


class _FetchError(Exception):
    """A fetch failed; the message is a short reason, safe for logs and readiness."""


def fits(alg: str, key: object) -> bool:
    """Whether a public key object can verify JWS algorithm ``alg`` (RFC 7518 §3.1, RFC 8037)."""
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _EC_CURVES[alg]
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


class SigningKey(jwt.PyJWK):
    """A public verification key, remembering the ``alg`` its JWK declared (RFC 7517 §4.4)."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        alg = data.get("alg")
        self.declared_alg: str | None = alg if isinstance(alg, str) else None

    def accepts(self, alg: str) -> bool:
        # A key that names its algorithm verifies only that one; without a name the key type
        # decides (so an RSA key without `alg` serves both RS256 and PS256).
        if self.declared_alg is not None and self.declared_alg != alg:
            return False
        return fits(alg, self.key)


@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: Mapping[str, SigningKey]
    fetched_at: float  # on the cache's clock


class JwksCache:
    """The signature keys of one issuer, fetched from its ``jwks_uri`` (or OpenID discovery)."""

    def __init__(self, issuer: IssuerSettings, http: httpx2.AsyncClient,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer
        self._http = http
        self._clock = clock
        # Intersect with the global allow-list: `none` and HS* never pass, even if a config slipped.
        self._algorithms = frozenset(issuer.algorithms) & ALLOWED_ALGORITHMS
        self._jwks_uri = issuer.jwks_uri
        self._set: _KeySet | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._attempted_at = -math.inf  # start of the last fetch, whatever caused it
        self._miss_fetch_at = -math.inf  # start of the last fetch caused by an unknown kid
        self._last_error: str | None = None
        # Series exist from the start, at zero: a rate over a missing series is no alert.
        self._refreshes = metrics.JWKS_REFRESHES.labels(issuer.issuer)
        self._failures = metrics.JWKS_FAILURES.labels(issuer.issuer)

    async def get(self, kid: str) -> SigningKey:
        now = self._clock()
        if self._refresh_due(now):
            self._start_fetch()  # in the background; answer from the current set meanwhile
        key = self._lookup(kid, now)
        if key is None:
            # An unknown kid may be a key the IdP has just published (rotation): look once more,
            # joining a fetch in flight or starting one at most once per cooldown window, so
            # made-up kids cannot make us hammer the IdP.
            if self._inflight is None and now - self._miss_fetch_at >= self._cooldown:
                self._miss_fetch_at = now
                self._start_fetch()
            if self._inflight is not None:
                await asyncio.shield(self._inflight)
                now = self._clock()
                key = self._lookup(kid, now)
        if key is not None:
            return key
        if not self.usable(now):
            raise KeysUnavailable(f"no usable signing keys for {self.issuer.issuer}")
        raise KeyNotFound(kid)

    def known(self, kid: str) -> SigningKey | None:
        """The key, when `get` would answer it at once without starting a fetch (the set is
        usable and not due for refresh); None when only `get` can tell."""
        now = self._clock()
        return None if self._refresh_due(now) else self._lookup(kid, now)

    async def refresh(self) -> None:
        """Fetch the key set now, or join the fetch in flight. Never raises: see `status()`."""
        await asyncio.shield(self._start_fetch())

    async def warm(self) -> None:
        """The start-up fetch; an IdP that is down is recorded, not raised."""
        await self.refresh()

    def usable(self, now: float | None = None) -> bool:
        """There are keys, and they are not older than max-stale."""
        now = self._clock() if now is None else now
        return (self._set is not None and bool(self._set.keys)
                and now - self._set.fetched_at <= self.issuer.jwks_max_stale_seconds)

    def status(self) -> dict[str, object]:
        now = self._clock()
        age = None if self._set is None else round(now - self._set.fetched_at, 3)
        return {"keys": 0 if self._set is None else len(self._set.keys), "age_seconds": age,
                "usable": self.usable(now), "last_error": self._last_error}

    # -- internals ---------------------------------------------------------------------------

    @property
    def _cooldown(self) -> float:
        return self.issuer.jwks_cooldown_seconds

    def _refresh_due(self, now: float) -> bool:
        return (self._set is not None and self._inflight is None
                and now - self._set.fetched_at >= self.issuer.jwks_refresh_seconds
                # an IdP that is down is retried once per cooldown, not on every request
                and now - self._attempted_at >= self._cooldown)

    def _lookup(self, kid: str, now: float) -> SigningKey | None:
        return self._set.keys.get(kid) if self.usable(now) and self._set is not None else None

    def _start_fetch(self) -> asyncio.Task[None]:
        # Single flight: every caller awaits the same task; shielded, so a caller that goes away
        # (client disconnect) does not cancel the fetch for the others.
        if self._inflight is None:
            self._attempted_at = self._clock()
            self._inflight = asyncio.create_task(self._fetch())
        return self._inflight

    async def _fetch(self) -> None:
        self._refreshes.inc()
        try:
            keys = await self._download_keys()
        except _FetchError as exc:
            self._failed(str(exc))
        except httpx2.TimeoutException:
            self._failed("timed out")
        except httpx2.HTTPError as exc:
            self._failed(f"request failed ({type(exc).__name__})")
        except Exception as exc:  # a background task must record, not lose, what went wrong
            self._failed(f"unexpected error ({type(exc).__name__})")
        else:
            # A successful fetch replaces the set: keys the IdP removed stop working.
            self._set = _KeySet(keys, self._clock())
            self._last_error = None if keys else "the key set has no usable signing keys"
        finally:
            self._inflight = None

    def _failed(self, reason: str) -> None:
        self._failures.inc()
        self._last_error = reason
        log.warning("jwks_fetch_failed", issuer=self.issuer.issuer, reason=reason,
                    serving_cached=self.usable())

    async def _download_keys(self) -> dict[str, SigningKey]:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        try:
            document = await self._get_json(self._jwks_uri, "jwks_uri")
        except Exception:
            if self.issuer.jwks_uri is None:
                self._jwks_uri = None  # discovered: discover again next time
            raise
        return parse_key_set(document, self._algorithms)

    async def _discover(self) -> str:
        # OpenID Connect Discovery 1.0 §4: the issuer, trailing "/" removed, + the well-known path.
        issuer = self.issuer.issuer
        doc = await self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration",
                                   "discovery")
        # §4.3: the issuer in the document MUST be identical to the one we trust.
        if not isinstance(doc, dict) or doc.get("issuer") != issuer:
            raise _FetchError("discovery document names a different issuer")
        uri = doc.get("jwks_uri")
        parts = urlsplit(uri) if isinstance(uri, str) else None
        allowed = ("https",) if issuer.startswith("https:") else ("https", "http")
        if not isinstance(uri, str) or parts is None or parts.scheme not in allowed \
                or not parts.netloc:
            raise _FetchError("discovery document has no usable jwks_uri")
        return uri

    async def _get_json(self, url: str, what: str) -> Any:
        # Redirects are never followed (the configured URL is the only source of keys). Only
        # unencoded bodies are read, so a compressed bomb never expands in memory.
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        async with self._http.stream("GET", url, headers=headers,
                                     follow_redirects=False) as response:
            if response.status_code != 200:
                raise _FetchError(f"{what} answered HTTP {response.status_code}")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise _FetchError(f"{what} sent an encoded response")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_RESPONSE_BYTES:
                raise _FetchError(f"{what} response is larger than {MAX_RESPONSE_BYTES} bytes")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise _FetchError(f"{what} response is larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise _FetchError(f"{what} response is not JSON") from None


def parse_key_set(document: Any, algorithms: frozenset[str]) -> dict[str, SigningKey]:
    """A JWK Set document → its usable signature keys by kid; unusable members are skipped."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise _FetchError("jwks_uri response is not a JWK Set")
    if len(keys) > MAX_KEYS:
        raise _FetchError(f"the key set has more than {MAX_KEYS} keys")
    out: dict[str, SigningKey] = {}
    for data in keys:
        key = _signing_key(data, algorithms)
        # RFC 7517 §4.5: kids should be unique within a set; on a clash the first one wins.
        if key is not None and key.key_id is not None and key.key_id not in out:
            out[key.key_id] = key
    return out


def _signing_key(data: object, algorithms: frozenset[str]) -> SigningKey | None:
    if not isinstance(data, dict):
        return None
    kid, use, ops, alg = data.get("kid"), data.get("use"), data.get("key_ops"), data.get("alg")
    if not isinstance(kid, str) or not kid:
        return None  # tokens must name their key, so a key without a kid is never chosen
    if use is not None and use != "sig":  # RFC 7517 §4.2
        return None
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):  # RFC 7517 §4.3
        return None
    if data.get("kty") not in ("RSA", "EC", "OKP"):  # never `oct`: a shared secret is no key here
        return None
    if alg is not None and alg not in algorithms:
        return None
    if _SECRET_MEMBERS & data.keys():
        return None  # a published private key is a broken IdP; do not use it
    try:
        key = SigningKey(data)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if isinstance(key.key, rsa.RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
        return None
    if not any(key.accepts(a) for a in algorithms):
        return None
    return key
