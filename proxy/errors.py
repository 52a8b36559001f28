"""problem+json answers (RFC 9457): a stable `type`, a human `title`, the request id.

Nothing here ever echoes a token, a secret or an upstream stack trace: `detail` strings are
written by orchgate, never copied from the request or the upstream.
"""

from __future__ import annotations

import orjson

PROBLEM_BASE = "urn:orchgate:problem:"


class Reject(Exception):
    """Stop the request with a problem answer; raised by any step of the pipeline."""

    def __init__(self, status: int, slug: str, title: str, detail: str = "",
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(f"{status} {slug}: {detail or title}")
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers


def problem_body(status: int, slug: str, title: str, detail: str, request_id: str) -> bytes:
    body: dict[str, object] = {"type": PROBLEM_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body["request_id"] = request_id
    return orjson.dumps(body)


def problem_headers(body: bytes, request_id: str,
                    extra: tuple[tuple[bytes, bytes], ...] = ()) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-request-id", request_id.encode()),
        *extra,
    ]


def not_found(detail: str) -> Reject:
    return Reject(404, "not-found", "Not found", detail)


def bad_request(detail: str) -> Reject:
    return Reject(400, "bad-request", "Bad request", detail)


def upstream_unavailable(system: str, detail: str) -> Reject:
    return Reject(503, "upstream-unavailable", "Upstream unavailable", f"{system}: {detail}")
