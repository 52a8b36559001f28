"""Bare forwarders: what a Python proxy costs with no pipeline at all.

Raw ASGI apps that check the bearer token (pyjwt with a loaded key, then a cache of the
tokens already verified) and forward the request to `BARE_UPSTREAM` with one HTTP client,
answering with the upstream's status and body. benchmarks/machinery.py runs them under uvicorn
and granian to show how much of orchgate's cost per request is the server and the client,
and which server and client are fastest here.

Each factory is an ASGI app factory (`uvicorn --factory`, `granian --factory`):
`aiohttp_app`, `httpx_app` (httpx2's own transport), `httpx_aiohttp_app` (httpx2 with
aiohttp as its transport).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Fetch = Callable[[str, list[tuple[str, str]]], Awaitable[tuple[int, bytes]]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]


def _app(open_client: Callable[[], Awaitable[tuple[Fetch, Callable[[], Awaitable[None]]]]]
         ) -> ASGI:
    upstream = os.environ["BARE_UPSTREAM"].rstrip("/")
    key = serialization.load_pem_public_key(Path(os.environ["BARE_PUBLIC_KEY"]).read_bytes())
    assert isinstance(key, rsa.RSAPublicKey)
    issuer, audience = os.environ["BARE_ISSUER"], os.environ.get("BARE_AUDIENCE", "orchgate")
    verified: set[bytes] = set()
    state: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["fetch"], state["close"] = await open_client()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await state["close"]()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if authorization not in verified:
            try:
                jwt.decode(authorization.removeprefix(b"Bearer ").decode(), key,
                           algorithms=["RS256"], audience=audience, issuer=issuer)
            except (jwt.InvalidTokenError, UnicodeDecodeError):
                await _answer(send, 401, b'{"title":"Unauthorized"}')
                return
            verified.add(authorization)
        status, body = await state["fetch"](upstream + scope["path"],
                                            [("accept", "application/json")])
        await _answer(send, status, body)

    return app


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def aiohttp_app() -> ASGI:
    import aiohttp

    async def open_client() -> tuple[Fetch, Callable[[], Awaitable[None]]]:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

        async def fetch(url: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
            async with session.get(url, headers=headers) as response:
                return response.status, await response.read()
        return fetch, session.close
    return _app(open_client)


def httpx_app() -> ASGI:
    import httpx2

    async def open_client() -> tuple[Fetch, Callable[[], Awaitable[None]]]:
        client = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=100))

        async def fetch(url: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
            response = await client.get(url, headers=headers)
            return response.status_code, response.content
        return fetch, client.aclose
    return _app(open_client)


def httpx_aiohttp_app() -> ASGI:
    import httpx2
    from httpx_aiohttp.httpx2 import Httpx2AiohttpClient

    async def open_client() -> tuple[Fetch, Callable[[], Awaitable[None]]]:
        client = Httpx2AiohttpClient(limits=httpx2.Limits(max_connections=100))

        async def fetch(url: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
            response = await client.get(url, headers=headers)
            return response.status_code, response.content
        return fetch, client.aclose
    return _app(open_client)
