"""The table of hostile requests, by category (see docs/security.md for what each defends).

Each entry is a `Case`: how to build the raw request, the status, orchgate's problem type,
and — when the request may pass — exactly what the upstream must receive.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from tests.harness import Received
from tests.security.kit import DAG, Case, Forwarded, Kit, b64url, hs256

API = "/api/v2/dags/team_a_etl"
LIST = "/airflow/api/v2/dags/team_a_etl/dagRuns"
TRIGGER = "/airflow/api/v2/dags/team_a_etl/dagRuns"
FLOWS = "/prefect/api/flows/"
NOW = int(time.time())


def exact(target: str, system: str = "airflow") -> Forwarded:
    def check(kit: Kit, seen: Received, request_id: str) -> None:
        kit.assert_sanitized(seen, target, request_id, system)
    return check


def token_case(id_: str, make: object, status: int = 401,
               problem: str = "unauthorized") -> Case:
    assert callable(make)
    return Case("token-" + id_, lambda k: k.raw(who=make(k)), status, problem)


# -- tokens ----------------------------------------------------------------------------------

TOKENS = [
    Case("token-none", lambda k: k.raw(who=None), 401, "unauthorized"),
    token_case("alg-none", lambda k: k.forged({"alg": "none"})),
    token_case("alg-none-uppercase", lambda k: k.forged({"alg": "NONE"})),
    token_case("alg-none-with-signature",
               lambda k: k.forged({"alg": "none"}, sign=lambda _: b"sig")),
    token_case("hs256-with-rsa-public-key",
               lambda k: k.forged({"alg": "HS256"}, sign=hs256(k.public_pem()))),
    token_case("hs512-with-rsa-public-key", lambda k: k.forged(
        {"alg": "HS512"}, sign=lambda d: hmac.new(k.public_pem(), d, hashlib.sha512).digest())),
    token_case("hs256-empty-key", lambda k: k.forged({"alg": "HS256"}, sign=hs256(b""))),
    token_case("rs256-empty-signature", lambda k: k.forged({"alg": "RS256"})),
    token_case("expired", lambda k: k.token(exp_in=-120)),
    token_case("nbf-future", lambda k: k.token(nbf=NOW + 3600)),
    token_case("missing-exp", lambda k: k.signed(k.claims(exp=None))),
    token_case("exp-string", lambda k: k.signed(k.claims(exp="9999999999"))),
    token_case("missing-aud", lambda k: k.signed(k.claims(aud=None))),
    token_case("missing-iss", lambda k: k.signed(k.claims(iss=None))),
    token_case("missing-sub", lambda k: k.signed(k.claims(sub=None))),
    token_case("wrong-aud", lambda k: k.token(aud="apache-airflow")),
    token_case("aud-list-only-foreign", lambda k: k.token(aud=["prefect", "apache-airflow"])),
    token_case("aud-prefix", lambda k: k.token(aud="orchgat")),
    token_case("aud-suffix", lambda k: k.token(aud="orchgate-admin")),
    token_case("wrong-iss", lambda k: k.signed(k.claims(iss="https://evil.example"))),
    token_case("iss-prefix", lambda k: k.signed(k.claims(iss=k.idp.issuer[:-1]))),
    token_case("iss-suffix", lambda k: k.signed(k.claims(iss=k.idp.issuer + "/"))),
    token_case("iss-suffix-path", lambda k: k.signed(k.claims(iss=k.idp.issuer + "/evil"))),
    token_case("iss-uppercase", lambda k: k.signed(k.claims(iss=k.idp.issuer.upper()))),
    token_case("iss-array", lambda k: k.forged({"alg": "RS256"}, k.claims(iss=[k.idp.issuer]),
                                               sign=k.rs256())),
    token_case("crit-header", lambda k: k.signed(k.claims(), headers={"crit": ["exp"]})),
    token_case("jku-header", lambda k: k.signed(
        k.claims(), headers={"jku": "https://evil.example/jwks"})),
    token_case("x5u-header", lambda k: k.signed(
        k.claims(), headers={"x5u": "https://evil.example/cert"})),
    token_case("jwk-header", lambda k: k.signed(k.claims(), headers={"jwk": {
        "kty": "RSA", "n": "AQAB", "e": "AQAB"}})),
    token_case("x5c-header", lambda k: k.signed(k.claims(), headers={"x5c": ["MIIB"]})),
    token_case("kid-path-traversal",
               lambda k: k.signed(k.claims(), headers={"kid": "../../../../etc/passwd"})),
    token_case("kid-sql", lambda k: k.signed(k.claims(), headers={"kid": "' OR '1'='1"})),
    token_case("kid-empty", lambda k: k.signed(k.claims(), headers={"kid": ""})),
    token_case("kid-number", lambda k: k.forged({"alg": "RS256", "kid": 1}, sign=k.rs256())),
    token_case("kid-list", lambda k: k.forged({"alg": "RS256", "kid": [k.idp.kid]},
                                              sign=k.rs256())),
    token_case("valid-signature-alg-none-claimed",
               lambda k: k.forged({"alg": "none"}, sign=k.rs256())),
    token_case("kid-of-other-issuer", lambda k: _other_issuer_kid(k)),
    token_case("other-issuer-key-own-iss", lambda k: _cross_signed(k)),
    token_case("unpublished-key", lambda k: k.signed(
        k.claims(), kid=k.idp.kid, key_of=_rogue(k))),
    token_case("tampered-claims", lambda k: _tampered(k)),
    token_case("jwe-five-parts", lambda k: "a.b.c.d.e", 401),
    token_case("duplicate-claim", lambda k: _duplicate_claim(k)),
    token_case("groups-huge", lambda k: k.token(groups=[f"g{i}" for i in range(300)])),
    token_case("oversized", lambda k: k.token(pad="x" * 9000), 400, "bad-request"),
    token_case("not-base64", lambda k: "!!!.???.***", 400, "bad-request"),
    Case("token-in-query", lambda k: k.raw(target=DAG + "?access_token=" + k.alice(),
                                             who=None), 401, "unauthorized"),
    Case("token-in-cookie", lambda k: k.raw(headers=[("Cookie", "_token=" + k.alice())],
                                              who=None), 401, "unauthorized"),
    Case("token-two-authorization-headers", lambda k: k.raw(
        headers=[("Authorization", "Bearer " + k.alice())]), 400, "bad-request"),
    Case("token-basic-scheme", lambda k: k.raw(who=None, headers=[
        ("Authorization", "Basic YWxpY2U6cGFzc3dvcmQ=")]), 401, "unauthorized"),
    Case("token-basic-scheme-with-jwt", lambda k: k.raw(who=None, headers=[
        ("Authorization", "Basic " + k.alice())]), 401, "unauthorized"),
    Case("token-no-scheme", lambda k: k.raw(who=None, headers=[
        ("Authorization", k.alice())]), 401, "unauthorized"),
    Case("token-trailing-garbage", lambda k: k.raw(who=None, headers=[
        ("Authorization", "Bearer " + k.alice() + " garbage")]), 400, "bad-request"),
    Case("token-appended-bytes", lambda k: k.raw(who=None, headers=[
        ("Authorization", "Bearer " + k.alice() + "AAAA")]), 401, "unauthorized"),
    Case("token-empty-bearer", lambda k: k.raw(who=None, headers=[
        ("Authorization", "Bearer ")]), 400, "bad-request"),
    Case("token-lowercase-scheme-accepted", lambda k: k.raw(who=None, headers=[
        ("Authorization", "bearer " + k.alice())]), 200, forwarded=exact(API)),
    Case("token-aud-list-with-ours-accepted", lambda k: k.raw(
        who=k.token(aud=["orchgate", "https://foreign.example"])), 200, forwarded=exact(API)),
    Case("token-of-service-account-name-spoof", lambda k: k.raw(
        who=k.token(sub="ci-team-a", client_id="orchgate-cli", groups=())),
        403, "forbidden"),
    Case("token-sub-with-crlf", lambda k: k.raw(who=k.token(sub="dave\r\nX-Injected: 1",
                                                            groups=())), 403, "forbidden"),
]


def _other_issuer_kid(k: Kit) -> str:
    # iss is ours, the kid and the signature are the other trusted issuer's.
    token = k.other_idp.sign(k.claims())
    k.minted.append(token)
    return token


def _cross_signed(k: Kit) -> str:
    # The other issuer's own claims, but our kid: signed with the other issuer's key.
    token = k.other_idp.sign(k.other_idp.claims("alice", groups=["platform-admins"]),
                             kid=k.other_idp.kid, headers={"kid": k.idp.kid})
    k.minted.append(token)
    return token


_ROGUE: dict[str, str] = {}


def _rogue(k: Kit) -> str:
    if "kid" not in _ROGUE:
        _ROGUE["kid"] = k.idp.add_key(publish=False)
    return _ROGUE["kid"]


def _tampered(k: Kit) -> str:
    header, _, signature = k.alice().split(".")
    claims = k.claims(groups=["platform-admins"])
    token = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    k.minted.append(token)
    return token


def _duplicate_claim(k: Kit) -> str:
    good = k.alice()
    header, _, _ = good.split(".")
    body = json.dumps(k.claims())[:-1] + ', "sub": "carol"}'
    token = f"{header}.{b64url(body.encode())}.AAAA"
    k.minted.append(token)
    return token


# -- paths -----------------------------------------------------------------------------------


def path_case(id_: str, target: bytes | str, status: int = 400,
              problem: str | None = "ambiguous-path", method: str = "GET") -> Case:
    return Case("path-" + id_, lambda k: k.raw(method, target), status, problem)


PATHS = [
    path_case("dotdot", "/airflow/api/v2/dags/team_b_etl/../team_a_etl"),
    path_case("dotdot-escape-prefix", "/airflow/api/v2/../../prefect/api/admin/version"),
    path_case("dot", "/airflow/api/v2/dags/./team_a_etl"),
    path_case("pct-2e2e", "/airflow/api/v2/dags/team_b_etl/%2e%2e/team_a_etl"),
    path_case("pct-2E2E-upper", "/airflow/api/v2/dags/team_b_etl/%2E%2E/team_a_etl"),
    path_case("dot-pct-2e", "/airflow/api/v2/dags/team_b_etl/.%2e/team_a_etl"),
    path_case("pct-2f", "/airflow/api/v2/dags/team_a_etl%2F..%2Fteam_b_etl"),
    path_case("pct-2f-lower", "/airflow/api/v2/dags/team_a_etl%2fdagRuns"),
    path_case("double-encoded-2f", "/airflow/api/v2/dags/team_a_etl%252F..%252Fteam_b_etl"),
    path_case("double-encoded-2e", "/airflow/api/v2/dags/%252e%252e/team_a_etl"),
    path_case("dotdot-semicolon", "/airflow/api/v2/dags/team_a_etl/..;/team_b_etl"),
    path_case("matrix-param", "/airflow/api/v2/dags/team_a_etl;jsessionid=x"),
    path_case("matrix-pct-3b", "/airflow/api/v2/dags/team_a_etl%3Bx"),
    path_case("double-slash", "/airflow/api/v2/dags//team_a_etl"),
    path_case("leading-double-slash", "//airflow/api/v2/dags/team_a_etl"),
    path_case("backslash", "/airflow/api/v2/dags\\team_a_etl"),
    path_case("pct-5c", "/airflow/api/v2/dags/team_b_etl%5C..%5Cteam_a_etl"),
    path_case("nul", "/airflow/api/v2/dags/team_a_etl%00"),
    path_case("crlf", "/airflow/api/v2/dags/team_a_etl%0d%0aX-Injected:%201"),
    path_case("tab", "/airflow/api/v2/dags/team_a_etl%09"),
    path_case("del", "/airflow/api/v2/dags/team_a_etl%7F"),
    path_case("pct-23", "/airflow/api/v2/dags/team_a_etl%23/x"),
    path_case("pct-25", "/airflow/api/v2/dags/team_a_%25"),
    path_case("overlong-dot", "/airflow/api/v2/dags/%C0%AE%C0%AE/team_a_etl"),
    path_case("overlong-slash", "/airflow/api/v2/dags/team_b_etl%C0%AFteam_a_etl"),
    path_case("overlong-3-byte", "/airflow/api/v2/dags/%E0%80%AE%E0%80%AE"),
    path_case("invalid-utf8", "/airflow/api/v2/dags/team_a_%FF"),
    path_case("encoded-prefix", "/%61irflow/api/v2/dags/team_a_etl"),
    path_case("encoded-prefix-other-system", "/%70refect/api/admin/version"),
    path_case("decodes-into-other-prefix", "/airflow%2Fprefect/api/admin/version"),
    Case("path-relative", lambda k: k.raw(target="airflow/api/v2/dags/team_a_etl"), 400,
         parser=True),
    path_case("asterisk", "*"),
    path_case("mixed-case-prefix", "/AIRFLOW/api/v2/dags/team_a_etl", 404, "not-found"),
    path_case("mixed-case-prefix-2", "/Airflow/api/v2/dags/team_a_etl", 404, "not-found"),
    path_case("mixed-case-api-root", "/airflow/API/v2/dags/team_a_etl", 403, "blocked"),
    path_case("prefix-lookalike", "/airflowx/api/v2/dags/team_a_etl", 404, "not-found"),
    path_case("prefix-only", "/airflow", 403, "blocked"),
    path_case("prefix-trailing-slash", "/airflow/", 403, "blocked"),
    path_case("other-api-root", "/airflow/api/v1/dags/team_a_etl", 403, "blocked"),
    path_case("ui-prefix", "/airflow/ui/auth/token", 403, "blocked", "POST"),
    path_case("execution-api", "/airflow/execution/task-instances/x/run", 403, "blocked",
              "PATCH"),
    path_case("trailing-slash-operation", "/airflow/api/v2/dags/team_a_etl/", 403,
              "operation-not-in-catalog"),
    path_case("unknown-method", "/airflow/api/v2/dags/team_a_etl", 403,
              "operation-not-in-catalog", "PUT"),
    path_case("trace-method", "/airflow/api/v2/dags/team_a_etl", 403,
              "operation-not-in-catalog", "TRACE"),
    path_case("dag-id-glob", "/airflow/api/v2/dags/team_b_*", 403, "forbidden"),
    path_case("dag-id-star", "/airflow/api/v2/dags/*", 403, "forbidden"),
    path_case("dag-id-like-pattern", "/airflow/api/v2/dags/team_b%25", 400),
    path_case("dag-id-like-underscore", "/airflow/api/v2/dags/team_b____", 403, "forbidden"),
    path_case("dag-id-team-name", "/airflow/api/v2/dags/team:b", 403, "forbidden"),
    Case("path-dag-id-glob-own-team-exact", lambda k: k.raw(
        target="/airflow/api/v2/dags/team_a_*"), 200,
        forwarded=exact("/api/v2/dags/team_a_*")),
    Case("path-fragment-dropped", lambda k: k.raw(target=DAG + "#/../team_b_etl"), 200,
         forwarded=exact(API)),
    Case("path-absolute-form", lambda k: k.raw(
        target="http://evil.example/airflow/api/v2/dags/team_a_etl"), 200,
        forwarded=exact(API)),
    Case("path-encoded-unreserved-same-meaning", lambda k: k.raw(
        target="/airflow/api/v2/dags/%74eam_a_etl"), 200,
        forwarded=exact("/api/v2/dags/%74eam_a_etl")),
    Case("path-raw-utf8", lambda k: k.raw(target=b"/airflow/api/v2/dags/team_a_\xc3\xa9"),
         400, parser=True),
    Case("path-overlong-target", lambda k: k.raw(target="/airflow/api/v2/dags/" + "a" * 70000),
         400, parser=True),
]


# -- headers ---------------------------------------------------------------------------------

SPOOFED = [
    ("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-Host", "airflow.internal"),
    ("X-Forwarded-Proto", "https"), ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Port", "443"), ("X-Forwarded-Server", "evil"),
    ("X-Forwarded-User", "carol"), ("X-Forwarded-Email", "carol@example.com"),
    ("Forwarded", "for=10.0.0.1;host=airflow.internal;proto=https"),
    ("X-Orchgate-User", "carol"), ("X-Orchgate-Principal", "group:platform-admins"),
    ("X-Orchgate-Decision", "allow"), ("X-Real-IP", "10.0.0.1"),
    ("True-Client-IP", "10.0.0.1"), ("X-Client-IP", "10.0.0.1"),
    ("X-Remote-User", "carol"), ("Remote-User", "carol"), ("X-User", "carol"),
    ("X-Auth-Request-User", "carol"), ("X-Auth-Request-Email", "carol@example.com"),
    ("X-Original-URL", "/api/v2/dags/team_b_etl"), ("X-Rewrite-URL", "/api/v2/dags/team_b_etl"),
    ("Prefect-Automation-Id", "00000000-0000-0000-0000-000000000000"),
    ("Proxy-Authorization", "Basic YWRtaW46YWRtaW4="),
]


def spoof_case(name: str, value: str) -> Case:
    return Case("header-" + name.lower(), lambda k: k.raw(headers=[(name, value)]), 200,
                forwarded=exact(API))


def _no_injected(kit: Kit, seen: Received, request_id: str) -> None:
    kit.assert_sanitized(seen, API, request_id)
    assert "x-injected" not in seen.header_names


HEADERS = [
    *(spoof_case(n, v) for n, v in SPOOFED),
    Case("header-underscore-x-forwarded-for", lambda k: k.raw(
        headers=[("X_Forwarded_For", "10.0.0.1")]), 200, forwarded=exact(API)),
    Case("header-underscore-remote-user", lambda k: k.raw(
        headers=[("Remote_User", "carol"), ("X_Orchgate_User", "carol")]), 200,
        forwarded=exact(API)),
    Case("header-case-variants", lambda k: k.raw(headers=[
        ("x-FORWARDED-user", "carol"), ("X-REAL-ip", "10.0.0.1"), ("FORWARDED", "for=1.2.3.4"),
        ("cOOKIE", "_token=x")]), 200, forwarded=exact(API)),
    Case("header-method-override", lambda k: k.raw(headers=[
        ("X-HTTP-Method-Override", "DELETE"), ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE")]), 200, forwarded=exact(API)),
    Case("header-method-override-on-post", lambda k: k.raw(
        "POST", TRIGGER, headers=[("X-HTTP-Method-Override", "DELETE"),
                                  ("Content-Type", "application/json")],
        body=b'{"logical_date": null}'), 200,
        forwarded=exact("/api/v2/dags/team_a_etl/dagRuns")),
    Case("header-connection-names-authorization", lambda k: k.raw(headers=[
        ("Connection", "Authorization")]), 200, forwarded=exact(API)),
    Case("header-connection-names-x-forwarded-for", lambda k: k.raw(headers=[
        ("Connection", "X-Forwarded-For, X-Request-ID")]), 200, forwarded=exact(API)),
    Case("header-connection-names-cookie-and-host", lambda k: k.raw(headers=[
        ("Connection", "Cookie, Host, Keep-Alive"), ("Cookie", "_token=x"),
        ("Keep-Alive", "timeout=5")]), 200, forwarded=exact(API)),
    Case("header-request-id-replaced", lambda k: k.raw(headers=[
        ("X-Request-ID", "chosen-by-caller")]), 200, forwarded=exact(API)),
    Case("header-te-trailers-upgrade", lambda k: k.raw(headers=[
        ("TE", "trailers"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]),
        200, forwarded=exact(API)),
    Case("header-crlf-in-token-claim", lambda k: k.raw(
        who=k.token(groups=["team-a-deployers", "x\r\nX-Injected: 1"])), 200,
        forwarded=_no_injected),
    Case("header-cr-in-value", lambda k: k.raw(headers=[b"X-A: a\rX-Injected: 1"]), 400,
         parser=True),
    Case("header-bare-lf", lambda k: k.raw(headers=[b"X-A: a\nX-Forwarded-User: carol"]), 400,
         parser=True),
    Case("header-obs-fold", lambda k: k.raw(headers=[b"X-A: a\r\n X-Forwarded-User: carol"]),
         400, parser=True),
    Case("header-nul-in-value", lambda k: k.raw(headers=[b"X-A: a\x00b"]), 400, parser=True),
    Case("header-space-before-colon", lambda k: k.raw(headers=[b"Authorization : Bearer x"]),
         400, parser=True),
    Case("header-cl-and-te", lambda k: k.raw("POST", TRIGGER, headers=[
        ("Content-Length", "5"), ("Transfer-Encoding", "chunked")], body=b"0\r\n\r\n"), 400,
        parser=True),
    Case("header-two-content-lengths", lambda k: k.raw("POST", TRIGGER, headers=[
        ("Content-Length", "5"), ("Content-Length", "6")], body=b"hello!"), 400, parser=True),
    Case("header-te-chunked-not-last", lambda k: k.raw("POST", TRIGGER, headers=[
        ("Transfer-Encoding", "chunked, identity")], body=b"0\r\n\r\n"), 400, parser=True),
    Case("header-te-unknown", lambda k: k.raw("POST", TRIGGER, headers=[
        ("Transfer-Encoding", "xchunked")], body=b"0\r\n\r\n"), 400, parser=True),
    Case("header-content-length-plus", lambda k: k.raw("POST", TRIGGER, headers=[
        ("Content-Length", "+5")], body=b"hello"), 400, parser=True),
    Case("header-lowercase-method", lambda k: k.raw("get"), 400, parser=True),
    Case("header-duplicate-host", lambda k: k.raw(headers=[("Host", "airflow.internal")]),
         400, "bad-request"),
    Case("header-host-with-path", lambda k: k.raw(host=b"evil.example/prefect/api"), 400,
         "bad-request"),
    Case("header-host-with-userinfo", lambda k: k.raw(host=b"carol@airflow.internal"), 400,
         "bad-request"),
    Case("header-host-changes-nothing", lambda k: k.raw(host=b"airflow.internal:8080"), 200,
         forwarded=exact(API)),
    Case("header-oversized", lambda k: k.raw(headers=[("X-Big", "a" * 20000)]), 431,
         "headers-too-large"),
    Case("header-many", lambda k: k.raw(headers=[(f"X-H{i}", "v" * 60) for i in range(400)]),
         431, "headers-too-large"),
]


# -- bodies ----------------------------------------------------------------------------------

JSON = ("Content-Type", "application/json")


BODIES = [
    Case("body-over-limit-declared", lambda k: k.raw(
        "POST", TRIGGER, headers=[JSON], body=b"{" + b" " * 70000 + b"}"), 413,
        "body-too-large"),
    Case("body-over-limit-chunked-buffered", lambda k: k.raw(
        "POST", FLOWS, headers=[JSON, ("Transfer-Encoding", "chunked")],
        body=_chunked(b'{"name": "team-a-' + b"x" * 70000 + b'"}')), 413, "body-too-large"),
    Case("body-malformed-json", lambda k: k.raw(
        "POST", FLOWS, headers=[JSON], body=b'{"name": "team-a-flow",'), 400, "bad-request"),
    Case("body-json-nan", lambda k: k.raw(
        "POST", FLOWS, headers=[JSON], body=b'{"name": NaN}'), 400, "bad-request"),
    Case("body-json-utf16", lambda k: k.raw(
        "POST", FLOWS, headers=[JSON], body='{"name": "team-a-x"}'.encode("utf-16")), 400,
        "bad-request"),
    Case("body-deeply-nested", lambda k: k.raw(
        "POST", FLOWS, headers=[JSON], body=b"[" * 20000 + b"]" * 20000), 400, "bad-request"),
    Case("body-deeply-nested-object", lambda k: k.raw(
        "POST", FLOWS, headers=[JSON], body=b'{"a":' * 5000 + b"1" + b"}" * 5000), 400,
        "bad-request"),
    Case("body-not-an-object", lambda k: k.raw(
        "POST", FLOWS, headers=[JSON], body=b'["team-a-flow"]'), 400, "bad-request"),
    Case("body-name-not-a-string", lambda k: k.raw(
        "POST", FLOWS, headers=[JSON], body=b'{"name": ["team-a-x", "team-b-x"]}'), 400,
        "bad-request"),
    Case("body-duplicate-keys-last-wins", lambda k: k.raw(
        "POST", FLOWS, headers=[JSON], body=b'{"name": "team-a-x", "name": "team-b-x"}'), 403,
        "forbidden"),
    Case("body-100k-dag-ids", lambda k: k.raw(
        "POST", "/airflow/api/v2/dags/~/dagRuns/list", headers=[JSON],
        body=json.dumps({"dag_ids": ["a"] * 100_000}).encode()), 413, "body-too-large"),
    Case("body-wrong-content-type", lambda k: k.raw(
        "POST", FLOWS, headers=[("Content-Type", "text/plain")],
        body=b'{"name": "team-a-x"}'), 415, "unsupported-media-type"),
    Case("body-form-content-type", lambda k: k.raw(
        "POST", FLOWS, headers=[("Content-Type", "application/x-www-form-urlencoded")],
        body=b'{"name": "team-a-x"}'), 415, "unsupported-media-type"),
    Case("body-gzip-encoded", lambda k: k.raw(
        "POST", FLOWS, headers=[JSON, ("Content-Encoding", "gzip")],
        body=__import__("gzip").compress(b'{"name": "team-a-x"}')), 400, "bad-request"),
    Case("body-on-get-not-forwarded", lambda k: k.raw(
        "GET", DAG, headers=[JSON], body=b'{"dag_id": "team_b_etl"}'), 200,
        forwarded=exact(API)),
]


def _chunked(data: bytes) -> bytes:
    out = b""
    for i in range(0, len(data), 8192):
        piece = data[i:i + 8192]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n\r\n"


CASES = [*TOKENS, *PATHS, *HEADERS, *BODIES]
