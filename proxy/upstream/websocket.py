"""Bridging a caller's websocket to the Prefect server's, frame by frame.

Prefect's sockets speak the `prefect` subprotocol: the first client message is
`{"type": "auth", "token": …}`, checked by the server against its auth string
(prefect/server/utilities/subscriptions.py, accept_prefect_socket, in 3.9.1). orchgate
authenticates the caller on that message (or on the upgrade's `Authorization` header), then
opens its own socket to the server and authenticates it with the server's credential.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from proxy.errors import Reject
from proxy.upstream.forward import Headers, Upstream

# RFC 6455 §7.4.1
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
NORMAL = 1000
MAX_FRAME = 4 * 1024 * 1024


FrameFilter = Callable[[str], Awaitable[bool]]  # True lets a text frame through


@dataclass(slots=True)
class BridgeResult:
    frames_in: int = 0
    frames_out: int = 0
    dropped_in: int = 0  # frames a filter kept from the upstream (e.g. events of others)
    dropped_out: int = 0  # frames a filter kept from the caller
    closed_by: str = ""
    close_code: int = NORMAL


async def connect(upstream: Upstream, path_qs: bytes, headers: Headers, auth_string: str
                  ) -> tuple[aiohttp.ClientWebSocketResponse, Any]:
    """Open the upstream socket and authenticate it; returns it and the server's answer."""
    try:
        ws = await upstream.session.ws_connect(
            upstream.url(path_qs), protocols=("prefect",), max_msg_size=MAX_FRAME,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
        )
    except aiohttp.WSServerHandshakeError as exc:
        raise Reject(502, "upstream-error", "Bad gateway",
                     f"{upstream.name} refused the socket (HTTP {exc.status})") from None
    except (aiohttp.ClientError, OSError, TimeoutError):
        raise Reject(502, "upstream-unreachable", "Bad gateway",
                     f"{upstream.name} could not be reached") from None
    await ws.send_str(orjson.dumps({"type": "auth", "token": auth_string}).decode())
    reply = await ws.receive(timeout=10)
    if reply.type != aiohttp.WSMsgType.TEXT:
        await ws.close()
        raise Reject(502, "upstream-error", "Bad gateway",
                     f"{upstream.name} did not accept orchgate's credential on the socket")
    answer = orjson.loads(reply.data)
    if not isinstance(answer, dict) or answer.get("type") != "auth_success":
        await ws.close()
        raise Reject(502, "upstream-error", "Bad gateway",
                     f"{upstream.name} did not accept orchgate's credential on the socket")
    return ws, reply.data


async def bridge(ws: aiohttp.ClientWebSocketResponse, receive: Any, send: Any,
                 expires_at: float, *, inbound: FrameFilter | None = None,
                 outbound: FrameFilter | None = None) -> BridgeResult:
    """Relay frames both ways until either side closes or the caller's token expires.

    `inbound`/`outbound` decide per text frame (caller → upstream / upstream → caller);
    binary frames are not part of the `prefect` subprotocol and are dropped when filtered.
    """
    result = BridgeResult()

    async def from_client() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                result.closed_by = "client"
                return
            if inbound is not None and not await _passes(inbound, message):
                result.dropped_in += 1
                continue
            if message.get("text") is not None:
                await ws.send_str(message["text"])
            elif message.get("bytes") is not None:
                await ws.send_bytes(message["bytes"])
            result.frames_in += 1

    async def from_upstream() -> None:
        async for message in ws:
            if outbound is not None and message.type in (aiohttp.WSMsgType.TEXT,
                                                         aiohttp.WSMsgType.BINARY) \
                    and not (message.type == aiohttp.WSMsgType.TEXT
                             and await outbound(message.data)):
                result.dropped_out += 1
                continue
            if message.type == aiohttp.WSMsgType.TEXT:
                await send({"type": "websocket.send", "text": message.data})
            elif message.type == aiohttp.WSMsgType.BINARY:
                await send({"type": "websocket.send", "bytes": message.data})
            else:
                break
            result.frames_out += 1
        result.closed_by = "upstream"

    async def expiry() -> None:
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        result.closed_by = "token-expired"

    tasks = [asyncio.create_task(t()) for t in (from_client, from_upstream, expiry)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ws.close()
    if result.closed_by == "token-expired":
        result.close_code = POLICY_VIOLATION
        await send({"type": "websocket.close", "code": POLICY_VIOLATION,
                    "reason": "token expired"})
    elif result.closed_by == "upstream":
        code = ws.close_code or NORMAL
        # 1005/1006/1015 are reserved: they describe a close, they are never sent (§7.4.1).
        result.close_code = NORMAL if code in (1005, 1006, 1015) else code
        await send({"type": "websocket.close", "code": result.close_code})
    return result


async def _passes(check: FrameFilter, message: dict[str, Any]) -> bool:
    text = message.get("text")
    return text is not None and await check(text)
