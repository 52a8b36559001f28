"""JwksCache against an IdP served by httpx2.MockTransport, on a fake clock (no sockets)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from proxy.identity.jwks import (
    MAX_KEYS,
    MAX_RESPONSE_BYTES,
    JwksCache,
    KeyNotFound,
    KeysUnavailable,
)
from proxy.settings import IssuerSettings

ISSUER = "https://idp.example.com/realms/main"
JWKS_URI = "https://idp.example.com/jwks"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NEW_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(kid: str, key: rsa.RSAPrivateKey = RSA_KEY, **extra: Any) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig",
            "alg": "RS256", **extra}


def ec_jwk(kid: str, **extra: Any) -> dict[str, Any]:
    return {**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": kid, "use": "sig",
            "alg": "ES256", **extra}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeIdP:
    """Discovery and JWKS endpoints; records every request path."""

    def __init__(self, *keys: Any) -> None:
        self.keys: list[Any] = list(keys)
        self.down = False
        self.requests: list[str] = []
        self.discovery: dict[str, Any] = {"issuer": ISSUER, "jwks_uri": JWKS_URI}
        self.response: httpx2.Response | None = None  # overrides the JWKS answer

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request.url.path)
        if self.down:
            raise httpx2.ConnectError("connection refused", request=request)
        if request.url.path == "/realms/main/.well-known/openid-configuration":
            return httpx2.Response(200, json=self.discovery)
        if str(request.url) == JWKS_URI:
            return self.response or httpx2.Response(200, json={"keys": self.keys})
        return httpx2.Response(404)

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))


async def chunks(chunk: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield chunk


def settings(**overrides: Any) -> IssuerSettings:
    values: dict[str, Any] = {"issuer": ISSUER, "audiences": ("orchgate",),
                              "jwks_uri": JWKS_URI, "jwks_cooldown_seconds": 30.0,
                              "jwks_refresh_seconds": 300.0, "jwks_max_stale_seconds": 3600.0}
    return IssuerSettings(**{**values, **overrides})


def test_warm_loads_the_keys() -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, clock)
            await cache.warm()
            key = await cache.get("a")
            assert key.key_id == "a"
            assert key.accepts("RS256")
            assert cache.status() == {"keys": 1, "age_seconds": 0.0, "usable": True,
                                      "last_error": None}

    asyncio.run(scenario())
    assert idp.requests == ["/jwks"]


def test_discovery_finds_the_jwks_uri_once() -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(jwks_uri=None), http, clock)
            await cache.warm()
            clock.now += 31
            with pytest.raises(KeyNotFound):
                await cache.get("other")
            assert (await cache.get("a")).key_id == "a"

    asyncio.run(scenario())
    assert idp.requests == ["/realms/main/.well-known/openid-configuration", "/jwks", "/jwks"]


@pytest.mark.parametrize("issuer", [ISSUER + "/", ISSUER.upper(), "https://evil.example.com",
                                    None])
def test_discovery_must_name_the_configured_issuer_exactly(issuer: str | None) -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()
    idp.discovery["issuer"] = issuer

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(jwks_uri=None), http, clock)
            await cache.warm()
            assert cache.status()["last_error"] == "discovery document names a different issuer"
            with pytest.raises(KeysUnavailable):
                await cache.get("a")

    asyncio.run(scenario())
    assert "/jwks" not in idp.requests


def test_discovery_rejects_a_plain_http_jwks_uri_for_an_https_issuer() -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()
    idp.discovery["jwks_uri"] = "http://idp.example.com/jwks"

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(jwks_uri=None), http, clock)
            await cache.warm()
            assert cache.status()["last_error"] == "discovery document has no usable jwks_uri"

    asyncio.run(scenario())


def test_unknown_kid_refetches_once_per_cooldown() -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, clock)
            await cache.warm()
            with pytest.raises(KeyNotFound):
                await cache.get("x")  # one refetch
            assert len(idp.requests) == 2
            clock.now += 29
            with pytest.raises(KeyNotFound):
                await cache.get("y")  # within the cooldown: fails at once
            assert len(idp.requests) == 2
            clock.now += 1
            with pytest.raises(KeyNotFound):
                await cache.get("y")
            assert len(idp.requests) == 3

    asyncio.run(scenario())


def test_concurrent_unknown_kids_share_one_fetch() -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, clock)
            await cache.warm()
            results = await asyncio.gather(*(cache.get(f"k{i}") for i in range(20)),
                                           return_exceptions=True)
            assert all(isinstance(r, KeyNotFound) for r in results)

    asyncio.run(scenario())
    assert idp.requests == ["/jwks", "/jwks"]


def test_concurrent_cold_start_shares_one_fetch() -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, clock)
            keys = await asyncio.gather(*(cache.get("a") for _ in range(20)))
            assert {k.key_id for k in keys} == {"a"}

    asyncio.run(scenario())
    assert idp.requests == ["/jwks"]


def test_rotated_key_is_found_after_one_refetch() -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, clock)
            await cache.warm()
            idp.keys.append(rsa_jwk("b", NEW_RSA_KEY))  # a new key, signing at once
            assert (await cache.get("b")).key_id == "b"
            assert (await cache.get("b")).key_id == "b"

    asyncio.run(scenario())
    assert idp.requests == ["/jwks", "/jwks"]


def test_periodic_refresh_drops_removed_keys() -> None:
    idp, clock = FakeIdP(rsa_jwk("a"), rsa_jwk("b", NEW_RSA_KEY)), FakeClock()

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, clock)
            await cache.warm()
            idp.keys = [rsa_jwk("b", NEW_RSA_KEY)]
            clock.now += 300
            # The refresh runs in the background: this answer still comes from the old set...
            assert (await cache.get("a")).key_id == "a"
            await cache.refresh()  # ...joining the fetch in flight, not starting another
            assert idp.requests == ["/jwks", "/jwks"]
            with pytest.raises(KeyNotFound):
                await cache.get("a")
            assert (await cache.get("b")).key_id == "b"

    asyncio.run(scenario())


def test_idp_down_serves_known_keys_until_max_stale() -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, clock)
            await cache.warm()
            idp.down = True
            for _ in range(120):  # an hour, a request every 30 s
                clock.now += 30
                assert (await cache.get("a")).key_id == "a"
                await asyncio.sleep(0)
            await cache.refresh()
            assert cache.status()["last_error"] == "request failed (ConnectError)"
            assert cache.status()["usable"] is True
            attempts = len(idp.requests)
            assert attempts <= 1 + 3600 / 30  # retried at most once per cooldown
            clock.now += 1
            with pytest.raises(KeysUnavailable):
                await cache.get("a")  # fail closed beyond max-stale
            assert cache.status()["usable"] is False
            idp.down = False
            clock.now += 30
            assert (await cache.get("a")).key_id == "a"  # recovers on the next attempt
            assert cache.status()["last_error"] is None

    asyncio.run(scenario())


def test_warm_with_the_idp_down_records_the_error() -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()
    idp.down = True

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, clock)
            await cache.warm()  # does not raise
            assert cache.status() == {"keys": 0, "age_seconds": None, "usable": False,
                                      "last_error": "request failed (ConnectError)"}
            with pytest.raises(KeysUnavailable):
                await cache.get("a")  # tries once more...
            with pytest.raises(KeysUnavailable):
                await cache.get("a")  # ...but not again within the cooldown
            assert len(idp.requests) == 2

    asyncio.run(scenario())


def test_only_public_signature_keys_for_allowed_algorithms_are_kept() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - on purpose
    private = {**rsa_jwk("private"), "d": "AQAB"}
    idp = FakeIdP(
        rsa_jwk("good"),
        {**rsa_jwk("no-alg"), "alg": None},
        rsa_jwk("enc", use="enc"),
        rsa_jwk("ops", key_ops=["encrypt"]),
        rsa_jwk("hs", alg="HS256"),
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0", "use": "sig"},
        {k: v for k, v in rsa_jwk("x").items() if k != "kid"},
        private,
        rsa_jwk("small", key=small),
        ec_jwk("ec"),  # ES256 is not in this issuer's algorithms
        {**ec_jwk("ec-as-rsa"), "alg": "RS256"},
        {**rsa_jwk("broken"), "n": "!!"},
        "not a key",
    )
    idp.keys[1].pop("alg")

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(algorithms=("RS256", "HS256", "none")), http, FakeClock())
            await cache.warm()
            assert cache.status()["keys"] == 2
            assert (await cache.get("good")).key_id == "good"
            assert (await cache.get("no-alg")).accepts("RS256")

    asyncio.run(scenario())


def test_key_alg_and_type_decide_what_a_key_verifies() -> None:
    idp = FakeIdP(rsa_jwk("rs"), {**rsa_jwk("any-rsa"), "alg": None}, ec_jwk("ec"))
    idp.keys[1].pop("alg")

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(algorithms=("RS256", "PS256", "ES256", "ES384")), http,
                              FakeClock())
            await cache.warm()
            rs, any_rsa, ec_key = [await cache.get(k) for k in ("rs", "any-rsa", "ec")]
            assert rs.accepts("RS256")
            assert not rs.accepts("PS256")
            assert any_rsa.accepts("RS256")
            assert any_rsa.accepts("PS256")
            assert not any_rsa.accepts("ES256")
            assert ec_key.accepts("ES256")
            assert not ec_key.accepts("ES384")

    asyncio.run(scenario())


def test_a_successful_refetch_replaces_the_set_even_when_empty() -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, clock)
            await cache.warm()
            idp.keys = []
            await cache.refresh()
            assert cache.status()["last_error"] == "the key set has no usable signing keys"
            with pytest.raises(KeysUnavailable):
                await cache.get("a")

    asyncio.run(scenario())


@pytest.mark.parametrize(("response", "error"), [
    (httpx2.Response(302, headers={"Location": "https://evil.example.com/jwks"}),
     "jwks_uri answered HTTP 302"),
    (httpx2.Response(500), "jwks_uri answered HTTP 500"),
    (httpx2.Response(200, content=b"<html>"), "jwks_uri response is not JSON"),
    (httpx2.Response(200, content=b"[" * 100_000), "jwks_uri response is not JSON"),
    (httpx2.Response(200, json={"keys": {}}), "jwks_uri response is not a JWK Set"),
    (httpx2.Response(200, json=[]), "jwks_uri response is not a JWK Set"),
    (httpx2.Response(200, json={"keys": [rsa_jwk(f"k{i}") for i in range(MAX_KEYS + 1)]}),
     f"the key set has more than {MAX_KEYS} keys"),
    (httpx2.Response(200, content=b" " * (MAX_RESPONSE_BYTES + 1)),
     f"jwks_uri response is larger than {MAX_RESPONSE_BYTES} bytes"),
    (httpx2.Response(200, content=chunks(b" " * 65536, 5)),  # streamed, no Content-Length
     f"jwks_uri response is larger than {MAX_RESPONSE_BYTES} bytes"),
    (httpx2.Response(200, content=gzip.compress(json.dumps({"keys": []}).encode()),
                     headers={"Content-Encoding": "gzip"}),
     "jwks_uri sent an encoded response"),
], ids=["redirect", "500", "html", "deep", "keys-object", "array", "too-many-keys",
        "too-large", "too-large-streamed", "gzip"])
def test_a_bad_response_keeps_the_last_good_set(response: httpx2.Response, error: str) -> None:
    idp, clock = FakeIdP(rsa_jwk("a")), FakeClock()

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, clock)
            await cache.warm()
            idp.response = response
            await cache.refresh()
            status = cache.status()
            assert status["last_error"] == error
            assert status["usable"] is True
            assert (await cache.get("a")).key_id == "a"

    asyncio.run(scenario())
    assert idp.requests == ["/jwks", "/jwks"]  # the redirect was not followed


def test_timeouts_come_from_the_client_and_are_recorded() -> None:
    def handle(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("slow", request=request)

    async def scenario() -> None:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handle)) as http:
            cache = JwksCache(settings(), http, FakeClock())
            await cache.warm()
            assert cache.status()["last_error"] == "timed out"

    asyncio.run(scenario())


def test_status_never_shows_key_material() -> None:
    jwk = rsa_jwk("a")
    idp = FakeIdP(jwk)

    async def scenario() -> None:
        async with idp.client() as http:
            cache = JwksCache(settings(), http, FakeClock())
            await cache.warm()
            assert jwk["n"][:16] not in json.dumps(cache.status())

    asyncio.run(scenario())
