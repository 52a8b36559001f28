"""Streaming HTTP forwarding to one upstream, on aiohttp.

aiohttp carries the data path (DESIGN.md §2: httpx's default transport was 5–9× slower here).
One pooled session per upstream; redirects are never followed; bodies are streamed both ways
unless a step asked for the body (then it is already buffered, within the size limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from yarl import URL

from proxy.errors import Reject
from proxy.settings import Limits, UpstreamSettings

Headers = list[tuple[bytes, bytes]]


class Upstream:
    """The pooled connection to one upstream, opened in the app's lifespan."""

    def __init__(self, settings: UpstreamSettings, limits: Limits) -> None:
        self.settings = settings
        self.name = settings.name
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limits.pool_size, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None,
                                          connect=self._limits.connect_timeout_seconds,
                                          sock_read=self._limits.read_timeout_seconds),
            auto_decompress=False,  # bytes pass through as the upstream encoded them
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),  # never keep an upstream session
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstream.start() was not called"
        return self._session

    def url(self, raw_path_and_query: bytes) -> URL:
        # encoded=True: the path goes out byte for byte as edge.canonical_path accepted it.
        return URL(self.settings.url + raw_path_and_query.decode("ascii"), encoded=True)

    @asynccontextmanager
    async def request(self, method: str, raw_path_and_query: bytes, headers: Headers,
                      body: bytes | AsyncIterator[bytes] | None
                      ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request; connection failures → 502, timeouts → 504 (as `Reject`)."""
        try:
            async with self.session.request(
                method, self.url(raw_path_and_query),
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                data=body, allow_redirects=False, compress=None,
            ) as response:
                yield response
        except TimeoutError:
            raise Reject(504, "upstream-timeout", "Upstream timed out",
                         f"{self.name} did not answer in time") from None
        except aiohttp.ClientPayloadError:
            raise Reject(502, "upstream-error", "Bad gateway",
                         f"{self.name} sent a broken response") from None
        except (aiohttp.ClientConnectionError, OSError):
            raise Reject(502, "upstream-unreachable", "Bad gateway",
                         f"{self.name} could not be reached") from None

    async def get_json(self, raw_path_and_query: bytes, headers: Headers,
                       method: str = "GET", body: bytes | None = None) -> tuple[int, Any]:
        """A control-plane call (lookups, list pages): the status and the parsed JSON."""
        own = {b"accept", b"accept-encoding", b"content-type", b"content-length"}
        sent = [(k, v) for k, v in headers if k not in own]
        sent += [(b"accept", b"application/json"), (b"accept-encoding", b"identity")]
        if body is not None:
            sent.append((b"content-type", b"application/json"))
        async with self.request(method, raw_path_and_query, sent, body) as response:
            data = await response.read()
        try:
            return response.status, orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            raise Reject(502, "upstream-error", "Bad gateway",
                         f"{self.name} answered with malformed JSON") from None

    async def healthy(self, path: str) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(self._limits.connect_timeout_seconds):
                async with self.session.get(self.settings.url + path,
                                            allow_redirects=False) as response:
                    return response.status == 200, f"HTTP {response.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return False, type(exc).__name__
