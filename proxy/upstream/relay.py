"""Step 8 for a plain request: send it upstream and relay the answer to the caller as it comes.

Streamed both ways (Airflow's NDJSON `/wait` included); a small answer of known length goes out
in one piece. Failures before the answer started become problem answers; after, the stream is
cut (pipeline.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from proxy.audit.record import CAPTURE_LIMIT
from proxy.context import RequestContext
from proxy.edge import downstream_response_headers
from proxy.errors import Reject
from proxy.upstream.forward import Headers, Upstream

Send = Any
WHOLE_BODY_BYTES = 64 * 1024  # known-length answers up to this size are sent in one piece


async def forward(ctx: RequestContext, upstream: Upstream, path_qs: bytes, headers: Headers,
                  body: bytes | AsyncIterator[bytes] | None, send: Send) -> None:
    try:
        await _forward(ctx, upstream, path_qs, headers, body, send)
    except Reject:
        # A failure while streaming the caller's body surfaces from the client as a lost
        # connection; the caller's own fault (too large, went away) is the true answer.
        if ctx.body_error is not None:
            raise ctx.body_error from None
        raise


async def _forward(ctx: RequestContext, upstream: Upstream, path_qs: bytes, headers: Headers,
                   body: bytes | AsyncIterator[bytes] | None, send: Send) -> None:
    assert ctx.operation is not None
    async with upstream.request(ctx.method, path_qs, headers, body,
                                retry=ctx.operation.idempotent) as response:
        ctx.upstream_status = ctx.status = response.status
        out_headers = [*downstream_response_headers(response.raw_headers),
                       (b"x-request-id", ctx.request_id.encode())]
        length = response.content_length
        if (not ctx.operation.streaming and length is not None and length <= WHOLE_BODY_BYTES
                and ctx.method != "HEAD"):
            # A small answer of known length goes out whole, with its length: one write to
            # the caller instead of a chunked stream and its terminator (measured: most of the
            # API's answers; about a fifth of the proxy's time went to those extra writes).
            data = await response.read()
            ctx.bytes_out = len(data)
            if ctx.capture is not None:
                ctx.capture += data[:CAPTURE_LIMIT]
            await send({"type": "http.response.start", "status": response.status,
                        "headers": [*out_headers, (b"content-length", str(len(data)).encode())]})
            ctx.response_started = True
            await send({"type": "http.response.body", "body": data})
            return
        await send({"type": "http.response.start", "status": response.status,
                    "headers": out_headers})
        ctx.response_started = True
        async for chunk in response.iter_chunks():
            ctx.bytes_out += len(chunk)
            if ctx.capture is not None and len(ctx.capture) < CAPTURE_LIMIT:
                ctx.capture += chunk  # a creation's answer names what it created (record.py)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
