"""The caller's request body: its declared length and content type, bounded reads (in size and
in time: a slow body is cut at the body timeout), and JSON."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.context import RequestContext
from proxy.errors import Reject

Headers = list[tuple[bytes, bytes]]
Receive = Any


def content_length(headers: Headers) -> int | None:
    values = [v for k, v in headers if k == b"content-length"]
    if not values:
        return None
    if len(set(values)) != 1 or not values[0].isdigit():
        raise Reject(400, "bad-request", "Bad request", "conflicting or invalid Content-Length")
    return int(values[0])


def too_large(limit: int) -> Reject:
    return Reject(413, "body-too-large", "Request body too large",
                  f"the limit is {limit} bytes")


def body_timeout(seconds: float) -> Reject:
    return Reject(408, "body-timeout", "Request body timeout",
                  f"the body did not arrive within {seconds:g} seconds")


def check_json_content_type(headers: Headers) -> None:
    """A body orchgate reads as JSON must be one the upstream reads as JSON too: FastAPI parses
    it only without a Content-Type or with application/json or application/*+json."""
    values = [v for k, v in headers if k == b"content-type"]
    if not values:
        return
    media = values[0].split(b";")[0].strip().lower()
    if len(values) > 1 or not (media == b"application/json" or (
            media.startswith(b"application/") and media.endswith(b"+json"))):
        raise Reject(415, "unsupported-media-type", "Unsupported media type",
                     "this operation takes a JSON body (application/json)")


async def receive_by(receive: Receive, deadline: float, seconds: float) -> dict[str, Any]:
    try:
        async with asyncio.timeout_at(deadline):
            message: dict[str, Any] = await receive()
            return message
    except TimeoutError:
        raise body_timeout(seconds) from None


def parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Reject(400, "bad-request", "Bad request", "the body is not valid JSON") from None


async def read_body(receive: Receive, limit: int, seconds: float) -> bytes:
    chunks = []
    size = 0
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        message = await receive_by(receive, deadline, seconds)
        if message["type"] == "http.disconnect":
            raise Reject(400, "client-disconnected", "Client disconnected",
                         "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def stream_body(ctx: RequestContext, receive: Receive, limit: int, seconds: float
                      ) -> AsyncIterator[bytes]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            message = await receive_by(receive, deadline, seconds)
        except Reject as reject:
            ctx.body_error = reject  # aborts the upstream request, as below
            raise
        if message["type"] == "http.disconnect":
            ctx.body_error = Reject(400, "client-disconnected", "Client disconnected",
                                    "the client went away before sending the whole body")
            raise ctx.body_error
        chunk = message.get("body", b"")
        ctx.bytes_in += len(chunk)
        if ctx.bytes_in > limit:
            # Raising inside the upstream write aborts that request: the upstream gets a
            # broken body, never a complete one. The client learns why (see forward).
            ctx.body_error = too_large(limit)
            raise ctx.body_error
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
