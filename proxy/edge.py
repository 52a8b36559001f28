"""The edge: paths that mean one thing only, and headers the upstream can trust.

Authorization is decided on the path orchgate forwards, so the path must have exactly one
meaning: percent-decoding it must not create a separator, a dot segment or another escape.
Such paths are rejected, never repaired (repairing is how proxies and upstreams come to
disagree — e.g. CVE-2021-41773-style `%2e%2e`, nginx/Tomcat `..;/`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

from proxy.errors import Reject

# RFC 9110 §7.6.1 hop-by-hop fields, plus those a Connection header names.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection",
})
# The caller's credentials never go upstream; orchgate injects its own.
CREDENTIALS = frozenset({b"authorization", b"cookie"})
# Headers that claim an identity, a client address or a routing fact: set by orchgate only.
IDENTITY_PREFIXES = (b"x-forwarded-", b"x-orchgate-", b"x-auth-", b"x-remote-", b"x-user",
                     b"x-email", b"remote-user", b"x-real-ip", b"x-original-", b"x-rewrite-",
                     b"prefect-automation-", b"x-http-method", b"x-method-override")
IDENTITY_NAMES = frozenset({b"forwarded", b"x-client-ip", b"true-client-ip", b"client-ip",
                            b"x-cluster-client-ip"})
# Request headers rewritten by the forwarder itself.
REWRITTEN = frozenset({b"host", b"content-length", b"expect"})

_FORBIDDEN_IN_SEGMENT = frozenset(b"/\\%;#\x7f") | frozenset(range(0x20))


# A path of plain segments (no escapes, no dot segment, no empty segment but a final one)
# decodes to itself: most paths take this look instead of the segment-by-segment walk below,
# which accepts every path this one does, with the same result (tests/unit/test_edge.py).
_PLAIN_PATH = re.compile(rb"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9._~!$&'()*+,=:@-]+)+/?|/")


def canonical_path(raw_path: bytes) -> str:
    """The decoded path, when the raw path has a single meaning; else 400.

    Rejected: dot segments (raw or encoded), empty segments other than a final one (`//`),
    encoded `/`, `\\`, `%` (double encoding), `;` (matrix parameters), control characters,
    invalid UTF-8 (overlong forms included), and any `#` (a fragment never reaches a server).
    """
    if _PLAIN_PATH.fullmatch(raw_path):
        return raw_path.decode("ascii")
    return decoded_path(raw_path)


def decoded_path(raw_path: bytes) -> str:
    """`canonical_path` segment by segment, for any path."""
    if not raw_path.startswith(b"/"):
        raise _ambiguous("the path must start with /")
    if not raw_path.isascii():  # RFC 3986 §2.1: other bytes are percent-encoded
        raise _ambiguous("the path contains bytes outside ASCII")
    if b"#" in raw_path or b"\\" in raw_path:
        raise _ambiguous("the path contains # or \\")
    segments = raw_path[1:].split(b"/")
    decoded: list[str] = []
    for i, raw in enumerate(segments):
        if raw == b"" and i != len(segments) - 1:
            raise _ambiguous("the path contains an empty segment (//)")
        seg = unquote_to_bytes(raw)
        if seg in (b".", b".."):
            raise _ambiguous("the path contains a dot segment")
        if any(byte in _FORBIDDEN_IN_SEGMENT for byte in seg):
            raise _ambiguous("the path contains an encoded separator, escape, ; or control "
                             "character")
        try:
            decoded.append(seg.decode("utf-8"))  # strict: overlong forms are invalid UTF-8
        except UnicodeDecodeError:
            raise _ambiguous("the path is not valid UTF-8") from None
    return "/" + "/".join(decoded)


def _ambiguous(detail: str) -> Reject:
    return Reject(400, "ambiguous-path", "Ambiguous path", detail)


# RFC 9110 §7.2 / RFC 3986 §3.2.2: host [":" port]; a reg-name, an IPv4 or an IPv6 literal.
_HOST = re.compile(rb"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def check_request_headers(headers: list[tuple[bytes, bytes]], max_bytes: int) -> None:
    """Refuse headers over the size limit (431) and a Host with more than one meaning: RFC 9112
    §3.2 requires a 400 for a repeated Host, and its value is forwarded as X-Forwarded-Host."""
    if sum(len(k) + len(v) + 4 for k, v in headers) > max_bytes:
        raise Reject(431, "headers-too-large", "Request header fields too large",
                     f"the limit is {max_bytes} bytes")
    hosts = [v for k, v in headers if k == b"host"]
    if len(hosts) > 1 or (hosts and not _HOST.fullmatch(hosts[0])):
        raise Reject(400, "bad-request", "Bad request",
                     "the request needs at most one Host header: a host name and a port")


def is_trusted(client: str, trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
               ) -> bool:
    if not trusted:  # the default: no peer is trusted, and nothing needs parsing
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in net for net in trusted)


def forwarded_for(headers: list[tuple[bytes, bytes]], client: str, trusted: bool) -> str:
    """The X-Forwarded-For value to send: the peer appended to a trusted proxy's list."""
    if trusted:
        prior = [v.decode("latin-1").strip() for k, v in headers if k == b"x-forwarded-for"]
        if prior:
            return ", ".join([*prior, client])
    return client


def upstream_request_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The caller's headers minus hop-by-hop, credentials, identity claims and rewritten ones.

    Names are compared lower-cased and with `_` read as `-`: some upstream stacks (WSGI,
    CGI-style environs) treat `X_Forwarded_For` and `X-Forwarded-For` as the same field.
    """
    named_by_connection = {
        token.strip().lower().replace(b"_", b"-")
        for key, value in headers if key.lower() == b"connection"
        for token in value.split(b",")
    }
    out = []
    for key, value in headers:
        name = key.lower().replace(b"_", b"-")
        if (name in HOP_BY_HOP or name in named_by_connection or name in CREDENTIALS
                or name in IDENTITY_NAMES or name in REWRITTEN
                or name.startswith(IDENTITY_PREFIXES)):
            continue
        out.append((key.lower(), value))  # `_` is read as `-` to match, never rewritten
    return out


RESPONSE_DROPPED = HOP_BY_HOP | {b"set-cookie", b"content-length", b"server", b"date"}


def downstream_response_headers(headers: Iterable[tuple[bytes, bytes]]
                                ) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop ones and cookies (the caller never holds an
    upstream session: orchgate is the only client the upstream knows)."""
    pairs = [(k.lower(), v) for k, v in headers]
    named_by_connection = {
        token.strip().lower() for k, v in pairs if k == b"connection" for token in v.split(b",")
    }
    return [(k, v) for k, v in pairs if k not in RESPONSE_DROPPED and k not in named_by_connection]
