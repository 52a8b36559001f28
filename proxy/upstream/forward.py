"""Streaming HTTP forwarding to one upstream.

Requests go out on a pool of keep-alive connections of orchgate's own client (upstream/h1.py:
aiohttp's cost half the CPU budget of a request; httpx's default transport was 5–9× slower
still, DESIGN.md §2); aiohttp's session carries websockets and health checks. Redirects are
never followed; bodies are streamed both ways unless a step asked for the body (then it is
already buffered, within the size limit).
Idempotent calls are retried and every call passes the upstream's circuit breaker
(upstream/resilience.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from yarl import URL

from proxy import metrics
from proxy.errors import Reject
from proxy.settings import BreakerSettings, Limits, RetrySettings, UpstreamSettings
from proxy.upstream import h1
from proxy.upstream.resilience import RETRY_STATUSES, CircuitBreaker, Retries

Headers = list[tuple[bytes, bytes]]


class Upstream:
    """The pooled connection to one upstream, opened in the app's lifespan."""

    def __init__(self, settings: UpstreamSettings, limits: Limits,
                 retries: RetrySettings | None = None,
                 breaker: BreakerSettings | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._pool: h1.Pool | None = None
        self.retries = Retries(settings.name, retries or RetrySettings())
        self.breaker = CircuitBreaker(settings.name, breaker or BreakerSettings())
        self._latency = metrics.UPSTREAM_SECONDS.labels(settings.name)

    async def start(self) -> None:
        self._pool = h1.Pool(self.settings.url, self._limits.pool_size,
                             self._limits.connect_timeout_seconds,
                             self._limits.read_timeout_seconds)
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
        if self._pool is not None:
            self._pool.close()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstream.start() was not called"
        return self._session

    def url(self, raw_path_and_query: bytes) -> URL:
        """For aiohttp (websockets). encoded=True: the path goes out byte for byte as
        edge.canonical_path accepted it."""
        return URL(self.settings.url + raw_path_and_query.decode("ascii"), encoded=True)

    @property
    def pool(self) -> h1.Pool:
        assert self._pool is not None, "Upstream.start() was not called"
        return self._pool

    def request(self, method: str, raw_path_and_query: bytes, headers: Headers,
                body: bytes | AsyncIterator[bytes] | None, retry: bool | None = None
                ) -> Request:
        """Send a request and hand over its answer (`async with`); connection failures → 502,
        timeouts → 504 (as `Reject`), an open circuit → 503. `retry`: the call is idempotent
        (default: GET and HEAD are); a streamed body is never sent twice, and a response
        handed to the caller is never retried."""
        if retry is None:
            retry = method in ("GET", "HEAD")
        retry = retry and not isinstance(body, AsyncIterator)
        return Request(self, method, raw_path_and_query, headers, body, retry)

    def _failed(self, probe: bool, kind: str, counts: bool) -> None:
        metrics.UPSTREAM_FAILURES.labels(self.name, kind).inc()
        if counts:
            self.breaker.failed(probe)
        else:
            self.breaker.abandoned(probe)

    def _timeout(self) -> Reject:
        return Reject(504, "upstream-timeout", "Upstream timed out",
                      f"{self.name} did not answer in time")

    def _broken(self) -> Reject:
        return Reject(502, "upstream-error", "Bad gateway", f"{self.name} sent a broken response")

    def _unreachable(self) -> Reject:
        return Reject(502, "upstream-unreachable", "Bad gateway",
                      f"{self.name} could not be reached")

    def _disconnected(self) -> Reject:
        # Connected, the call sent (or being sent), then no answer: unlike a connection that
        # never opened, the call may have been carried out, and a caller deciding whether to
        # send a write again needs to know that.
        return Reject(502, "upstream-disconnected", "Bad gateway",
                      f"{self.name} closed the connection without answering; the call may "
                      "have been carried out there")

    async def get_json(self, raw_path_and_query: bytes, headers: Headers,
                       method: str = "GET", body: bytes | None = None,
                       retry: bool | None = None) -> tuple[int, Any]:
        """A control-plane call (lookups, list pages): the status and the parsed JSON."""
        own = {b"accept", b"accept-encoding", b"content-type", b"content-length"}
        sent = [(k, v) for k, v in headers if k not in own]
        sent += [(b"accept", b"application/json"), (b"accept-encoding", b"identity")]
        if body is not None:
            sent.append((b"content-type", b"application/json"))
        async with self.request(method, raw_path_and_query, sent, body, retry) as response:
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


class Request:
    """One call through `Upstream.request`: the attempts until an answer is handed over
    (`__aenter__`), then what goes wrong while the caller reads it (`__aexit__`). A class
    rather than a generator: this runs for every forwarded request."""

    __slots__ = ("_body", "_exchange", "_headers", "_method", "_path", "_retry", "_upstream")

    def __init__(self, upstream: Upstream, method: str, raw_path_and_query: bytes,
                 headers: Headers, body: bytes | AsyncIterator[bytes] | None, retry: bool
                 ) -> None:
        self._upstream = upstream
        self._method = method
        self._path = raw_path_and_query
        self._headers = headers
        self._body = body
        self._retry = retry
        self._exchange: h1.Exchange | None = None

    async def __aenter__(self) -> h1.Answer:
        upstream, retry, body = self._upstream, self._retry, self._body
        upstream.retries.budget.request()
        attempt = 0
        while True:
            probe = upstream.breaker.admit()
            started = time.perf_counter()
            # The path goes out byte for byte as edge.canonical_path accepted it.
            exchange = upstream.pool.exchange(self._method, self._path, self._headers, body)
            try:
                response = await exchange.__aenter__()
                upstream._latency.observe(time.perf_counter() - started)
                upstream.breaker.succeeded(probe)
                probe = False
                if not (retry and response.status in RETRY_STATUSES
                        and upstream.retries.may_retry(attempt, str(response.status))):
                    self._exchange = exchange
                    return response
                await exchange.__aexit__(None, None, None)  # this answer is not handed over
            except TimeoutError as exc:
                upstream._failed(probe, "timeout", counts=True)
                probe = False
                # Only a connection that never opened is retried: an upstream too slow to
                # answer would be as slow again, and the caller would wait twice as long.
                if not (retry and isinstance(exc, h1.ConnectTimedOut)
                        and upstream.retries.may_retry(attempt, "connect-timeout")):
                    raise upstream._timeout() from None
            except h1.BrokenAnswer:
                raise upstream._broken() from None
            except (h1.ConnectFailed, h1.Disconnected, OSError) as exc:
                # A streamed body that fails surfaces here too: that is the caller's doing
                # (too large, gone), not the upstream's, unless the connection never opened.
                upstream._failed(probe, "connect", counts=not isinstance(body, AsyncIterator)
                                 or isinstance(exc, h1.ConnectFailed))
                probe = False
                if not (retry and upstream.retries.may_retry(attempt, "connect")):
                    if isinstance(exc, h1.ConnectFailed):
                        raise upstream._unreachable() from None
                    raise upstream._disconnected() from None
            finally:
                upstream.breaker.abandoned(probe)  # cancelled mid-probe: the next request probes
            attempt += 1
            await asyncio.sleep(upstream.retries.backoff(attempt))

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        _tb: object) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.__aexit__(kind, exc, _tb)
        # The answer was handed over: a failure while it is read is the upstream's.
        if isinstance(exc, TimeoutError):
            raise self._upstream._timeout() from None
        if isinstance(exc, h1.BrokenAnswer):
            raise self._upstream._broken() from None
        if isinstance(exc, (h1.ConnectFailed, h1.Disconnected, OSError)):
            raise self._upstream._unreachable() from None
