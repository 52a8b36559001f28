"""proxy.edge: one meaning per path; only trustworthy headers reach the upstream."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.edge import (
    canonical_path,
    decoded_path,
    downstream_response_headers,
    forwarded_for,
    is_trusted,
    upstream_request_headers,
)
from proxy.errors import Reject

RUN_ID = "manual__2024-05-01T10:00:00+00:00"


@pytest.mark.parametrize(("raw", "expected"), [
    (b"/", "/"),
    (b"/airflow/api/v2/dags", "/airflow/api/v2/dags"),
    (b"/airflow/api/v2/dags/team_a_etl/dagRuns", "/airflow/api/v2/dags/team_a_etl/dagRuns"),
    # Airflow run ids carry `+` and `:`, raw or percent-encoded (clients do both).
    (f"/api/v2/dags/etl/dagRuns/{RUN_ID}".encode(), f"/api/v2/dags/etl/dagRuns/{RUN_ID}"),
    (b"/api/v2/dags/etl/dagRuns/manual__2024-05-01T10%3A00%3A00%2B00%3A00",
     f"/api/v2/dags/etl/dagRuns/{RUN_ID}"),
    (b"/api/v2/dags/etl/dagRuns/manual__2024-05-01T10%3a00%3a00%2b00%3a00",
     f"/api/v2/dags/etl/dagRuns/{RUN_ID}"),
    # Prefect's collection routes end in a slash.
    (b"/prefect/api/flows/", "/prefect/api/flows/"),
    (b"/prefect/api/deployments/name/my-flow/nightly",
     "/prefect/api/deployments/name/my-flow/nightly"),
    (b"/api/v2/dags/%7Eweird", "/api/v2/dags/~weird"),
    (b"/api/v2/dags/caf%C3%A9", "/api/v2/dags/café"),
    (b"/api/v2/dags/a.b/..c/c..", "/api/v2/dags/a.b/..c/c.."),  # dots inside a name are fine
])
def test_canonical_path_accepts(raw: bytes, expected: str) -> None:
    assert canonical_path(raw) == expected


@pytest.mark.parametrize("raw", [
    b"api/v2/dags",  # not absolute
    b"",
    # Dot segments, raw and encoded (CVE-2021-41773 style), and as a last segment.
    b"/api/v2/dags/../variables",
    b"/api/v2/dags/./x",
    b"/api/v2/dags/..",
    b"/api/v2/dags/%2e%2e/variables",
    b"/api/v2/dags/%2E%2E/variables",
    b"/api/v2/dags/.%2e/variables",
    b"/api/v2/dags/%2e./variables",
    b"/api/v2/dags/%2e/x",
    # Encoded slashes and double encoding.
    b"/api/v2/dags/a%2Fb",
    b"/api/v2/dags/a%2fb",
    b"/api/v2/dags/a%252Fb",
    b"/api/v2/dags/a%25",
    # Matrix parameters: Tomcat/Jetty strip them, Python frameworks do not.
    b"/api/v2/dags/..;/variables",
    b"/api/v2/dags/x;jsessionid=1",
    b"/api/v2/dags/x%3Bv=1",
    # Empty segments.
    b"//api/v2/dags",
    b"/api/v2//dags",
    # Backslashes (IIS and some routers read them as /).
    b"/api/v2/dags\\..\\variables",
    b"/api/v2/dags/a%5Cb",
    b"/api/v2/dags/a%5cb",
    # Control characters, NUL included.
    b"/api/v2/dags/a%00b",
    b"/api/v2/dags/a%0Ab",
    b"/api/v2/dags/a%7Fb",
    # Fragments never reach a server: a `#`, raw or encoded, is someone's trick.
    b"/api/v2/dags/a#b",
    b"/api/v2/dags/a%23b",
    # Invalid UTF-8: overlong `.` (`%c0%ae`), a lone continuation byte, a truncated sequence.
    b"/api/v2/dags/%c0%ae%c0%ae/variables",
    b"/api/v2/dags/%C0%AE",
    b"/api/v2/dags/%80",
    b"/api/v2/dags/%e2%82",
    b"/api/v2/dags/%ff",
    # Raw bytes outside ASCII: a client must percent-encode them.
    "/api/v2/dags/café".encode(),
])
def test_canonical_path_rejects(raw: bytes) -> None:
    with pytest.raises(Reject) as info:
        canonical_path(raw)

    assert info.value.status == 400
    assert info.value.slug == "ambiguous-path"


# Characters a segment may hold once decoded: everything but separators, escapes, `;`, `#`,
# and control characters (surrogates cannot be encoded as UTF-8).
_SAFE = st.characters(
    exclude_categories=("Cs", "Cc"),
    exclude_characters="/\\%;#\x7f",
)
_SEGMENT = st.text(_SAFE, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@settings(max_examples=300, deadline=None)
@given(segments=st.lists(_SEGMENT, min_size=1, max_size=6), trailing_slash=st.booleans(),
       keep=st.sampled_from(["", ":+~@!$&'()*,=", "+:"]))
def test_quoting_then_canonicalizing_gives_the_decoded_path(
        segments: list[str], trailing_slash: bool, keep: str) -> None:
    decoded = "/" + "/".join(segments) + ("/" if trailing_slash else "")
    raw = ("/" + "/".join(quote(s, safe=keep) for s in segments)
           + ("/" if trailing_slash else "")).encode("ascii")

    assert canonical_path(raw) == decoded
    # Idempotent: quoted again, the decoded form is accepted and means the same; sent raw, it
    # is too when it is ASCII (other bytes must be percent-encoded, RFC 3986 §2.1).
    assert canonical_path(quote(decoded).encode("ascii")) == decoded
    if decoded.isascii():
        assert canonical_path(decoded.encode("ascii")) == decoded


def _outcome(check: Callable[[bytes], str], raw: bytes) -> str | tuple[int, str]:
    try:
        return check(raw)
    except Reject as reject:
        return (reject.status, reject.slug)


# Raw paths built from the bytes that decide: separators, dots, escapes and what they encode,
# `;`, `#`, controls, non-ASCII, and plain characters.
_RAW_PATH = st.lists(st.sampled_from([
    b"/", b"/", b".", b"..", b"a", b"Z9", b"_-~", b":+@!$&'()*,=", b"%2e", b"%2E", b"%2f",
    b"%25", b"%41", b"%", b";", b"#", b"\\", b"\x00", b"\x7f", b" ", b"\xc3\xa9", b"?",
]), max_size=10).map(b"".join)


@settings(max_examples=2000, deadline=None)
@given(raw=_RAW_PATH)
def test_the_plain_path_look_agrees_with_the_segment_walk(raw: bytes) -> None:
    """The regular expression most paths take accepts only paths the segment-by-segment walk
    accepts, and gives the same decoded path."""
    assert _outcome(canonical_path, raw) == _outcome(decoded_path, raw)


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [k for k, _ in headers]


ORDINARY = [
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
    (b"user-agent", b"airflow-client/3.3.2"),
    (b"correlation-id", b"6f1c"),
    (b"accept-encoding", b"gzip"),
    (b"x-request-id", b"r-1"),
]


def test_ordinary_headers_are_kept_in_order() -> None:
    assert upstream_request_headers(list(ORDINARY)) == ORDINARY


@pytest.mark.parametrize("name", [
    # Hop-by-hop (RFC 9110 §7.6.1).
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection",
    # The caller's credentials.
    b"authorization", b"cookie",
    # Identity, client address and routing claims.
    b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-user",
    b"forwarded", b"x-real-ip", b"x-orchgate-principal", b"x-orchgate-anything",
    b"prefect-automation-id", b"prefect-automation-name", b"x-auth-request-user",
    b"x-remote-user", b"remote-user", b"x-user", b"x-email", b"x-original-url",
    b"x-rewrite-url", b"x-http-method-override", b"x-client-ip", b"true-client-ip",
    # Rewritten by the forwarder.
    b"host", b"content-length", b"expect",
    # Odd spellings of the same fields: case, and `_` for `-` (WSGI/CGI read them alike).
    b"Authorization", b"AUTHORIZATION", b"Cookie", b"X-Forwarded-For", b"x_forwarded_for",
    b"X_Forwarded_Host", b"X_ORCHGATE_PRINCIPAL", b"Prefect_Automation_Id",
    b"PREFECT-AUTOMATION-NAME", b"x_real_ip", b"Forwarded", b"Remote_User", b"Transfer_Encoding",
])
def test_a_dropped_header_never_reaches_the_upstream(name: bytes) -> None:
    out = upstream_request_headers([*ORDINARY, (name, b"spoofed")])

    assert out == ORDINARY


@pytest.mark.parametrize("connection", [
    b"x-trace, x-debug",
    b"X-Trace,X-DEBUG",
    b"  x-trace ,  x-debug  ",
    b"x_trace, X_Debug",
])
def test_headers_named_by_connection_are_dropped(connection: bytes) -> None:
    headers = [*ORDINARY, (b"connection", connection), (b"x-trace", b"1"), (b"x-debug", b"1")]

    assert upstream_request_headers(headers) == ORDINARY


def test_connection_cannot_smuggle_or_unmask_a_credential() -> None:
    # `Connection: Authorization` must not make orchgate treat the credential as hop-by-hop
    # and forget to strip it elsewhere; it is dropped either way, as are the ordinary
    # headers the caller names.
    headers = [(b"Connection", b"keep-alive, Authorization, Accept"),
               (b"authorization", b"Bearer caller"), (b"accept", b"*/*"),
               (b"content-type", b"text/plain")]

    assert upstream_request_headers(headers) == [(b"content-type", b"text/plain")]


def test_header_names_go_out_lower_cased() -> None:
    out = upstream_request_headers([(b"Accept", b"text/plain"), (b"X-Custom", b"v")])

    assert out == [(b"accept", b"text/plain"), (b"x-custom", b"v")]


def test_response_headers_drop_cookies_and_hop_by_hop() -> None:
    upstream = [
        (b"Content-Type", b"application/json"),
        (b"Set-Cookie", b"_token=upstream-session"),
        (b"set-cookie", b"other=1"),
        (b"Connection", b"keep-alive, X-Upstream-Internal"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"x-upstream-internal", b"1"),
        (b"content-length", b"12"),
        (b"server", b"uvicorn"),
        (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"cache-control", b"no-store"),
        (b"etag", b'"abc"'),
    ]

    assert downstream_response_headers(upstream) == [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"etag", b'"abc"'),
    ]


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(("client", "expected"), [
    ("10.1.2.3", True), ("::1", True), ("192.168.1.1", False), ("::2", False),
    ("not-an-ip", False), ("", False),
])
def test_is_trusted(client: str, expected: bool) -> None:
    assert is_trusted(client, TRUSTED) is expected


def test_forwarded_for_from_a_trusted_proxy_appends_the_peer() -> None:
    headers = [(b"x-forwarded-for", b"203.0.113.7, 198.51.100.2"),
               (b"x-forwarded-for", b" 1.2.3.4")]

    assert forwarded_for(headers, "10.0.0.5", trusted=True) == \
        "203.0.113.7, 198.51.100.2, 1.2.3.4, 10.0.0.5"


def test_forwarded_for_from_a_trusted_proxy_without_a_list_is_the_peer() -> None:
    assert forwarded_for([(b"accept", b"*/*")], "10.0.0.5", trusted=True) == "10.0.0.5"


def test_forwarded_for_from_an_untrusted_peer_ignores_its_claims() -> None:
    headers = [(b"x-forwarded-for", b"127.0.0.1")]

    assert forwarded_for(headers, "192.0.2.10", trusted=False) == "192.0.2.10"
