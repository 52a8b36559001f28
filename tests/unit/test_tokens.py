"""bearer_token and TokenVerifier against an IdP served by httpx2.MockTransport (no sockets)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from proxy.identity import AuthError, KeysUnavailable, Principal, TokenVerifier, bearer_token
from proxy.settings import IssuerSettings

ISSUER = "https://idp.example.com/realms/main"
OTHER_ISSUER = "https://other.example.com"
JWKS_URI = "https://idp.example.com/jwks"
OTHER_JWKS_URI = "https://other.example.com/jwks"
AUDIENCE = "orchgate"
KEYS = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for kid in ("k1", "k2", "rogue")}
EC_KEY = ec.generate_private_key(ec.SECP256R1())


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeIdP:
    """Publishes a JWKS, signs tokens, records every request URL."""

    def __init__(self) -> None:
        self.published: dict[str, dict[str, Any]] = {}
        self.down = False
        self.requests: list[str] = []
        self.publish("k1")

    def publish(self, kid: str, alg: str | None = "RS256") -> None:
        if kid == "ec":
            jwk = ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(KEYS[kid].public_key(), as_dict=True)
        self.published[kid] = {**jwk, "kid": kid, "use": "sig",
                               **({"alg": alg} if alg else {})}

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(str(request.url))
        if self.down:
            raise httpx2.ConnectError("connection refused", request=request)
        if str(request.url) == JWKS_URI:
            return httpx2.Response(200, json={"keys": list(self.published.values())})
        if str(request.url) == OTHER_JWKS_URI:  # another issuer, publishing only k2
            jwk = RSAAlgorithm.to_jwk(KEYS["k2"].public_key(), as_dict=True)
            return httpx2.Response(200, json={"keys": [{**jwk, "kid": "k2"}]})
        return httpx2.Response(404)

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "exp": now + 300, "iat": now,
            "azp": "cli", "email": "alice@example.com", "groups": ["data-eng", "oncall"]}
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def sign(payload: dict[str, Any], kid: str | None = "k1", alg: str = "RS256",
         **headers: Any) -> str:
    # Signed as raw JWS (RFC 7515), so claims pyjwt would refuse to encode can be tested too.
    key: Any = EC_KEY if kid == "ec" else KEYS[kid if kid in KEYS else "k1"]
    return jwt.PyJWS().encode(json.dumps(payload).encode(), key, algorithm=alg,
                              headers={**({"kid": kid} if kid else {}), **headers})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any] | str, payload: dict[str, Any] | str,
          signature: Callable[[bytes], bytes] = lambda _: b"") -> str:
    def part(value: dict[str, Any] | str) -> str:
        return b64(value.encode() if isinstance(value, str) else json.dumps(value).encode())

    signing_input = f"{part(header)}.{part(payload)}"
    return f"{signing_input}.{b64(signature(signing_input.encode()))}"


def issuer(name: str = ISSUER, **overrides: Any) -> IssuerSettings:
    values: dict[str, Any] = {"issuer": name, "audiences": (AUDIENCE, "apache-airflow"),
                              "algorithms": ("RS256", "PS256", "ES256"), "jwks_uri": JWKS_URI,
                              "leeway_seconds": 30}
    return IssuerSettings(**{**values, **overrides})


Scenario = Callable[[TokenVerifier, FakeIdP, FakeClock, FakeClock], Awaitable[None]]


def run(scenario: Scenario, *, idp: FakeIdP | None = None,
        issuers: tuple[IssuerSettings, ...] | None = None) -> FakeIdP:
    """Run one scenario with a verifier, its IdP, the wall clock and the JWKS clock."""
    idp = idp or FakeIdP()
    wall, mono = FakeClock(time.time()), FakeClock(1000.0)

    async def main() -> None:
        async with idp.client() as http:
            verifier = TokenVerifier(issuers or (issuer(),), http, wall, jwks_clock=mono)
            await scenario(verifier, idp, wall, mono)

    asyncio.run(main())
    return idp


async def rejected(verifier: TokenVerifier, token: str, description: str) -> None:
    with pytest.raises(AuthError) as caught:
        await verifier.verify(token)
    assert (caught.value.error, caught.value.description) == ("invalid_token", description)
    assert token not in str(caught.value)
    assert token[-20:] not in caught.value.description


def verifies(token: str, **expected: Any) -> Callable[..., Awaitable[None]]:
    async def scenario(verifier: TokenVerifier, *_: Any) -> None:
        principal = await verifier.verify(token)
        for name, value in expected.items():
            assert getattr(principal, name) == value

    return scenario


def rejects(token: str, description: str) -> Callable[..., Awaitable[None]]:
    async def scenario(verifier: TokenVerifier, *_: Any) -> None:
        await rejected(verifier, token, description)

    return scenario


# -- bearer_token ------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [b"Bearer abc.def-_~+/=", b"bearer abc", b"BEARER abc",
                                    b"Bearer   abc", b" Bearer abc \t"])
def test_bearer_token_accepts(header: bytes) -> None:
    assert bearer_token([header]) == header.strip().split()[-1].decode()


@pytest.mark.parametrize(("values", "error", "description"), [
    ([], "", "missing bearer token"),
    ([b"Basic dXNlcjpwYXNz"], "", "authorization scheme is not Bearer"),
    ([b"Bearer a", b"Bearer b"], "invalid_request", "more than one Authorization header"),
    ([b""], "invalid_request", "empty Authorization header"),
    ([b"Bearer"], "invalid_request", "empty bearer token"),
    ([b"Bearer "], "invalid_request", "empty bearer token"),
    ([b"Bearer abc def"], "invalid_request", "malformed bearer token"),
    ([b"Bearer abc,def"], "invalid_request", "malformed bearer token"),
    ([b"Bearer abc=def"], "invalid_request", "malformed bearer token"),
    ([b"Bearer abc\x00"], "invalid_request", "malformed bearer token"),
    ([b"Bearer \xc3\xa9t\xc3\xa9"], "invalid_request", "malformed bearer token"),
    ([b"Bearer " + b"a" * (8 * 1024 + 1)], "invalid_request", "bearer token too long"),
])
def test_bearer_token_rejects(values: list[bytes], error: str, description: str) -> None:
    with pytest.raises(AuthError) as caught:
        bearer_token(values)
    assert (caught.value.error, caught.value.description) == (error, description)
    assert caught.value.status_code == (400 if error else 401)


def test_challenge_follows_rfc_6750() -> None:
    assert AuthError("", "missing bearer token").challenge() == 'Bearer realm="orchgate"'
    assert AuthError("invalid_token", "token expired").challenge() == (
        'Bearer realm="orchgate", error="invalid_token", error_description="token expired"')


# -- valid tokens and claim mapping ------------------------------------------------------------


def test_a_valid_token_gives_a_user_principal() -> None:
    async def scenario(verifier: TokenVerifier, *_: Any) -> None:
        principal = await verifier.verify(sign(claims()))
        assert principal == Principal(
            sub="alice", issuer=ISSUER, kind="user", groups=("data-eng", "oncall"),
            client_id="cli", expires_at=principal.expires_at, email="alice@example.com")
        assert principal.name == "alice"
        assert principal.subjects == ("user:alice", "group:data-eng", "group:oncall")

    run(scenario)


def test_a_client_credentials_token_is_a_service_account() -> None:
    token = sign(claims(sub="ci-bot", client_id="ci-bot", azp="other", email=None, groups=None))

    async def scenario(verifier: TokenVerifier, *_: Any) -> None:
        principal = await verifier.verify(token)
        assert (principal.kind, principal.name, principal.subjects) == (
            "service", "ci-bot", ("sa:ci-bot",))

    run(scenario)


@pytest.mark.parametrize(("overrides", "kind", "client_id"), [
    ({"sub": "ci-bot", "azp": "ci-bot"}, "service", "ci-bot"),  # azp when client_id is absent
    ({"sub": "alice", "client_id": "alice-cli"}, "user", "alice-cli"),
    ({"sub": "alice", "azp": None}, "user", None),
    ({"sub": "ci-bot", "client_id": ["ci-bot"], "azp": "ci-bot"}, "user", None),
])
def test_service_account_or_user(overrides: dict[str, Any], kind: str,
                                 client_id: str | None) -> None:
    run(verifies(sign(claims(**overrides)), kind=kind, client_id=client_id))


@pytest.mark.parametrize(("path", "extra", "groups"), [
    ("realm_access.roles", {"realm_access": {"roles": ["admins", "dev", "admins"]}},
     ("admins", "dev")),
    ("https://example.com/groups", {"https://example.com/groups": ["a"]}, ("a",)),
    ("realm_access.roles", {"realm_access": {"roles": "admins"}}, ()),
    ("realm_access.roles", {"realm_access": {"roles": ["a", 1]}}, ()),
    ("realm_access.roles", {"realm_access": ["roles"]}, ()),
    ("missing.path", {}, ()),
])
def test_groups_from_a_dotted_claim_path(path: str, extra: dict[str, Any],
                                         groups: tuple[str, ...]) -> None:
    token = sign(claims(groups=None, **extra))
    run(verifies(token, groups=groups), issuers=(issuer(groups_claim=path),))


def test_an_oversized_groups_claim_is_refused_not_truncated() -> None:
    run(rejects(sign(claims(groups=[f"g{i}" for i in range(257)])), "groups claim too large"))
    run(rejects(sign(claims(groups=["g" * 257])), "groups claim too large"))


def test_audience_list_passes_when_one_entry_is_ours() -> None:
    run(verifies(sign(claims(aud=["https://foreign.example.com", AUDIENCE])), sub="alice"))
    run(verifies(sign(claims(aud="apache-airflow")), sub="alice"))


def test_each_issuer_trusts_only_its_own_keys() -> None:
    issuers = (issuer(), issuer(OTHER_ISSUER, jwks_uri=OTHER_JWKS_URI))

    async def scenario(verifier: TokenVerifier, *_: Any) -> None:
        other = await verifier.verify(sign(claims(iss=OTHER_ISSUER), kid="k2"))
        assert other.issuer == OTHER_ISSUER
        await rejected(verifier, sign(claims(iss=OTHER_ISSUER), kid="k1"), "unknown signing key")
        await rejected(verifier, sign(claims(), kid="k2"), "unknown signing key")

    idp = run(scenario, issuers=issuers)
    assert sorted(set(idp.requests)) == [JWKS_URI, OTHER_JWKS_URI]


# -- rejected tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize(("token", "description"), [
    (sign(claims(exp=int(time.time()) - 120)), "token expired"),
    (sign(claims(nbf=int(time.time()) + 3600)), "token not yet valid"),
    (sign(claims(iat=int(time.time()) + 3600)), "token not yet valid"),
    (sign(claims(aud="someone-else")), "audience not accepted"),
    (sign(claims(aud=["https://foreign.example.com"])), "audience not accepted"),
    (sign(claims(iss="https://evil.example.com")), "untrusted issuer"),
    (sign(claims(iss=ISSUER[:-1])), "untrusted issuer"),  # a prefix of a trusted issuer
    (sign(claims(iss=ISSUER + "/evil")), "untrusted issuer"),  # extends a trusted issuer
    (sign(claims(iss=ISSUER + "/")), "untrusted issuer"),  # no normalisation
    (sign(claims(iss=ISSUER.upper())), "untrusted issuer"),
    (sign(claims(iss=[ISSUER])), "issuer claim missing or not a string"),
    (sign(claims(iss=None)), "issuer claim missing or not a string"),
    (sign(claims(exp=None)), "token has no exp claim"),
    (sign(claims(aud=None)), "token has no aud claim"),
    (sign(claims(sub=None)), "token has no sub claim"),
    (sign(claims(sub=42)), "subject claim must be a string"),
    (sign(claims(sub="")), "subject claim empty or too long"),
    (sign(claims(exp="9999999999")), "malformed exp claim"),
    (sign(claims(), kid=None), "token has no key id"),
    (sign(claims(), kid="k2"), "unknown signing key"),
    (sign(claims(), kid="ec", alg="ES256"), "unknown signing key"),
    (jwt.encode(claims(), KEYS["rogue"], algorithm="RS256", headers={"kid": "k1"}),
     "signature invalid"),
    (sign(claims(), alg="PS256"), "signing key does not match algorithm"),  # k1 declares RS256
    (sign(claims(), alg="RS384"), "algorithm not allowed"),
    (forge({"alg": "none", "kid": "k1"}, claims()), "algorithm not allowed"),
    (forge({"alg": "RS256", "kid": "k1"}, '{"iss": "a", "iss": "' + ISSUER + '"}'),
     "malformed token"),
    (forge({"alg": "RS256", "kid": "k1"}, '{"exp": NaN}'), "malformed token"),
    (forge({"alg": "RS256", "kid": "k1"}, '{"exp": 1e400}'), "malformed token"),
    (forge({"alg": "RS256", "kid": "k1"}, "[]"), "malformed token"),
    ("not-a-token", "malformed token"),
    ("a.b.c.d.e", "malformed token"),
    (sign(claims()) + "=", "malformed token"),
    ("x" * (8 * 1024 + 1), "malformed token"),
    ("é.é.é", "malformed token"),
], ids=["expired", "nbf", "iat-future", "wrong-aud", "foreign-aud-list", "wrong-iss",
        "iss-prefix", "iss-extended", "iss-trailing-slash", "iss-case", "iss-array", "no-iss",
        "no-exp", "no-aud", "no-sub", "sub-number", "sub-empty", "exp-string", "no-kid",
        "unknown-kid", "unknown-ec-kid", "wrong-key", "alg-key-mismatch", "alg-not-listed",
        "alg-none", "duplicate-iss", "nan", "huge-number", "payload-array", "one-part",
        "jwe", "padding", "oversized", "non-ascii"])
def test_rejected(token: str, description: str) -> None:
    run(rejects(token, description))


def test_alg_none_and_hs256_never_pass_even_if_configured() -> None:
    # HS256 "signed" with the RSA public key's PEM as the HMAC secret: the classic key confusion.
    pem = KEYS["k1"].public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    hs256 = forge({"alg": "HS256", "kid": "k1", "typ": "JWT"}, claims(),
                  lambda data: hmac.new(pem, data, hashlib.sha256).digest())
    none = forge({"alg": "none", "kid": "k1"}, claims())
    slipped = (issuer(algorithms=("RS256", "HS256", "none")),)
    for token in (hs256, none):
        run(rejects(token, "algorithm not allowed"), issuers=slipped)


@pytest.mark.parametrize("field", ["jku", "jwk", "x5u", "x5c"])
def test_key_naming_headers_are_refused_and_never_fetched(field: str) -> None:
    value: Any = {
        "jku": "https://evil.example.com/jwks", "x5u": "https://evil.example.com/cert.pem",
        "jwk": RSAAlgorithm.to_jwk(KEYS["rogue"].public_key(), as_dict=True),
        "x5c": ["MIIB"],
    }[field]
    token = jwt.encode(claims(), KEYS["rogue"], algorithm="RS256",
                       headers={"kid": "k1", field: value})
    idp = run(rejects(token, f"token header field {field} not allowed"))
    assert idp.requests == []


def test_crit_header_is_refused() -> None:
    token = sign(claims(), crit=["exp"], exp=1)
    run(rejects(token, "token header field crit not allowed"))


# -- keys: rotation, removal, outage -----------------------------------------------------------


def test_unknown_kid_refetches_once_then_waits_for_the_cooldown() -> None:
    async def scenario(verifier: TokenVerifier, idp: FakeIdP, _: FakeClock,
                       mono: FakeClock) -> None:
        await verifier.warm()
        mono.now += 1
        await rejected(verifier, sign(claims(), kid="k2"), "unknown signing key")
        assert len(idp.requests) == 2
        await rejected(verifier, sign(claims(), kid="rogue"), "unknown signing key")
        assert len(idp.requests) == 2  # within the cooldown: no fetch
        results = await asyncio.gather(
            *(verifier.verify(sign(claims(sub=f"u{i}"), kid="k2")) for i in range(10)),
            return_exceptions=True)
        assert all(isinstance(r, AuthError) for r in results)
        assert len(idp.requests) == 2

    run(scenario)


def test_concurrent_unknown_kids_cause_one_fetch() -> None:
    async def scenario(verifier: TokenVerifier, idp: FakeIdP, *_: Any) -> None:
        await verifier.warm()
        idp.publish("k2")
        tokens = [sign(claims(sub=f"u{i}"), kid="k2") for i in range(10)]
        principals = await asyncio.gather(*(verifier.verify(t) for t in tokens))
        assert [p.sub for p in principals] == [f"u{i}" for i in range(10)]
        assert len(idp.requests) == 2

    run(scenario)


def test_a_rotated_key_is_accepted_after_one_refetch() -> None:
    async def scenario(verifier: TokenVerifier, idp: FakeIdP, *_: Any) -> None:
        await verifier.warm()
        idp.publish("k2", alg=None)  # RS256 and PS256 both fit an RSA key without `alg`
        assert (await verifier.verify(sign(claims(), kid="k2", alg="PS256"))).sub == "alice"
        assert (await verifier.verify(sign(claims(sub="bob"), kid="k2"))).sub == "bob"
        assert len(idp.requests) == 2

    run(scenario)


def test_a_removed_key_stops_working_after_the_refresh_even_for_cached_tokens() -> None:
    async def scenario(verifier: TokenVerifier, idp: FakeIdP, _: FakeClock,
                       mono: FakeClock) -> None:
        idp.publish("k2")
        cached, fresh = sign(claims(), kid="k1"), sign(claims(sub="bob"), kid="k1")
        await verifier.verify(cached)
        del idp.published["k1"]
        mono.now += 300
        await verifier.verify(cached)  # starts the background refresh
        await verifier.warm()  # joins it
        await rejected(verifier, cached, "unknown signing key")
        await rejected(verifier, fresh, "unknown signing key")
        assert (await verifier.verify(sign(claims(), kid="k2"))).sub == "alice"

    run(scenario)


def test_a_cached_token_is_known_at_once_only_while_verify_would_answer_it_from_its_cache(
        ) -> None:
    # `cached` (the request path's first look) answers only what `verify` would answer from
    # its cache without a fetch or a signature check; anything else goes to `verify`.
    async def scenario(verifier: TokenVerifier, idp: FakeIdP, wall: FakeClock,
                       mono: FakeClock) -> None:
        idp.publish("k2")
        await verifier.warm()
        token, other = sign(claims()), sign(claims(sub="bob"))
        assert verifier.cached(token) is None  # never verified
        principal = await verifier.verify(token)
        assert verifier.cached(token) is principal
        assert verifier.cached(other) is None
        assert verifier.cached(token + "x") is None and verifier.cached("é" + token) is None
        # The key set due for a refresh: verify must start it.
        mono.now += 300
        assert verifier.cached(token) is None
        del idp.published["k1"]
        await verifier.verify(token)  # answered from the set in hand; the refresh starts
        await verifier.warm()  # joins it: k1 is gone
        assert verifier.cached(token) is None  # a removed key stops cached tokens at once
        await rejected(verifier, token, "unknown signing key")

    run(scenario)


def test_a_cached_token_is_not_known_once_it_expires() -> None:
    async def scenario(verifier: TokenVerifier, _: FakeIdP, wall: FakeClock,
                       __: FakeClock) -> None:
        token = sign(claims(exp=int(wall.now) + 60))
        principal = await verifier.verify(token)
        wall.now += 59
        assert verifier.cached(token) is principal
        wall.now += 1
        assert verifier.cached(token) is None  # verify checks it again (with its leeway)
        wall.now += 31
        assert verifier.cached(token) is None
        await rejected(verifier, token, "token expired")

    run(scenario)


def test_idp_down_keeps_verifying_until_max_stale_then_fails_closed() -> None:
    async def scenario(verifier: TokenVerifier, idp: FakeIdP, _: FakeClock,
                       mono: FakeClock) -> None:
        await verifier.warm()
        assert verifier.ready
        idp.down = True
        mono.now += 3600
        assert (await verifier.verify(sign(claims()))).sub == "alice"
        await verifier.warm()
        status = verifier.status()
        assert status["ready"] is True
        assert status["issuers"] == {ISSUER: {
            "keys": 1, "age_seconds": 3600.0, "usable": True,
            "last_error": "request failed (ConnectError)"}}
        mono.now += 1
        assert not verifier.ready
        with pytest.raises(KeysUnavailable):  # the caller answers 503, not 401
            await verifier.verify(sign(claims(sub="bob")))

    run(scenario)


def test_warm_with_the_idp_down_does_not_raise() -> None:
    idp = FakeIdP()
    idp.down = True

    async def scenario(verifier: TokenVerifier, *_: Any) -> None:
        await verifier.warm()
        assert not verifier.ready
        assert verifier.status()["ready"] is False

    run(scenario, idp=idp)


# -- the verified-token cache ------------------------------------------------------------------


def test_a_cache_hit_skips_pyjwt_and_expires_at_exp(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    decode = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    exp = int(time.time()) + 300
    token = sign(claims(exp=exp))

    async def scenario(verifier: TokenVerifier, _: FakeIdP, wall: FakeClock, *__: Any) -> None:
        first = await verifier.verify(token)
        assert await verifier.verify(token) is first
        assert len(calls) == 1
        wall.now = exp + 31  # past exp and the leeway, on the verifier's clock
        await rejected(verifier, token, "token expired")
        assert len(calls) == 2

    run(scenario)


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    decode = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    idp, tokens = FakeIdP(), [sign(claims(sub=f"u{i}")) for i in range(4)]

    async def main() -> None:
        async with idp.client() as http:
            verifier = TokenVerifier((issuer(),), http, cache_size=3)
            for token in tokens:
                await verifier.verify(token)
            await verifier.verify(tokens[3])  # still cached
            assert len(calls) == 4
            await verifier.verify(tokens[0])  # the oldest was evicted
            assert len(calls) == 5

    asyncio.run(main())


@pytest.mark.parametrize("settings", [issuer(audiences=()), issuer(algorithms=("HS256", "none"))])
def test_an_issuer_without_audiences_or_usable_algorithms_is_refused(
        settings: IssuerSettings) -> None:
    async def main() -> None:
        async with httpx2.AsyncClient() as http:
            with pytest.raises(ValueError, match="needs audiences and algorithms"):
                TokenVerifier((settings,), http)

    asyncio.run(main())


def test_a_principals_subjects_are_made_once_and_follow_its_fields() -> None:
    # The decision cache is keyed by them on every request: the same tuple each time.
    alice = Principal("alice", ISSUER, "user", ("a", "b"), None, 0.0)
    assert alice.subjects == ("user:alice", "group:a", "group:b")
    assert alice.subjects is alice.subjects
    bot = dataclasses.replace(alice, kind="service", client_id="ci-bot", groups=())
    assert bot.subjects == ("sa:ci-bot",)
    assert bot == Principal("alice", ISSUER, "service", (), "ci-bot", 0.0)
