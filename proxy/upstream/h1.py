"""A small HTTP/1.1 client for forwarding: one pool of keep-alive connections per upstream.

Why not aiohttp here (it still carries websockets and health checks): measured on this
project's benchmark machine, aiohttp's client costs ≈52 µs of CPU a request against a local
nginx, this one ≈10 µs — aiohttp alone spent more than half of the budget the throughput
target leaves a request (docs/performance.md). What it does is what forwarding needs and no
more: requests written in one piece (a bytes body with its Content-Length, a streamed one
chunked), answers parsed by llhttp (httptools, as uvicorn uses it), streamed to the caller with
backpressure, connections reused until the upstream or the idle limit closes them.

Failures are told apart the way the caller needs them told apart (forward.py): a connection
that never opened; one that opened and then closed before a whole answer head; an answer that
broke off or could not be parsed; a connect that took too long; an upstream that went quiet.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

Headers = list[tuple[bytes, bytes]]

IDLE_SECONDS = 4.0  # below the 5 s keep-alive of uvicorn-served upstreams (Airflow, Prefect)
HIGH_WATER = 256 * 1024  # answer bytes waiting for the caller before reading pauses
LOW_WATER = 64 * 1024


class UpstreamError(Exception):
    """What went wrong, in words safe for logs (no header or body content)."""


class ConnectFailed(UpstreamError):
    """No connection: refused, no route, the name did not resolve, TLS failed."""


class Disconnected(UpstreamError):
    """Connected, and the connection closed (or the request could not be sent) before the
    answer's head arrived: the call may have been carried out."""


class BrokenAnswer(UpstreamError):
    """An answer that could not be parsed, or whose body broke off."""


class ConnectTimedOut(UpstreamError, TimeoutError):
    pass


class ReadTimedOut(UpstreamError, TimeoutError):
    """Nothing arrived from the upstream for the read timeout."""


class _Connection(asyncio.Protocol):
    """One connection; one exchange at a time. The parser's callbacks fill in the answer and
    wake whoever waits for the next thing (the head, a chunk, the end)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.counted = False  # against the pool's limit, from connected until closed
        self.busy = False
        self.idle_since = 0.0
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.deadline = 0.0  # of the wait in progress (the read timeout)
        self.timer: asyncio.TimerHandle | None = None
        self.drained: asyncio.Future[None] | None = None
        self.writing_paused = False
        self.head_only = False  # the answer to HEAD: no body follows its head
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.head_done = False
        self.complete = False
        self.sent = False  # the whole request is on its way
        self.keep_alive = False  # the answer leaves the connection open
        self.until_close = False  # a body that ends when the connection does
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.reading_paused = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:  # nothing was asked: the upstream is confused
            self._fail(BrokenAnswer("the upstream sent data it was not asked for"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BrokenAnswer("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BrokenAnswer(f"the upstream's answer could not be parsed: "
                                    f"{type(exc).__name__}"))

    def eof_received(self) -> bool:
        # Close our end too; an answer that ends with the close is complete then
        # (connection_lost).
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.busy and not self.complete and self.error is None:
            if self.until_close:
                self.complete = True
            elif self.head_done:
                self.error = BrokenAnswer("the upstream closed the connection mid-answer")
            else:
                self.error = Disconnected("the upstream closed the connection without "
                                          "answering")
        self._wake()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.pool.forget(self)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # -- llhttp callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request
            self._fail(BrokenAnswer("the upstream sent more than one answer"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # an interim answer (103 Early Hints): not the answer
            self.headers = []
            return
        self.head_done = True
        if self.head_only:
            self.complete = True
        elif self.status not in (204, 304):
            names = {name.lower() for name, _ in self.headers}
            self.until_close = b"content-length" not in names and b"transfer-encoding" not in names
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.head_only or self.complete:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200 and not self.head_done:
            return
        self.keep_alive = self.parser.should_keep_alive()  # known only until this returns
        self.complete = True
        self._wake()

    # -- the exchange --------------------------------------------------------------------------

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _timed_out(self) -> None:
        self._fail(ReadTimedOut("the upstream sent nothing within the read timeout"))

    async def _wait(self) -> None:
        """Until the parser has something new (or the connection failed), at most the read
        timeout.

        One timer per connection, not one per wait (a timer costs more than the rest of a
        wait): each wait moves the deadline; the timer, when it fires, fails the wait in
        progress if its deadline has passed and otherwise sets itself for the new one."""
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.deadline = loop.time() + self.pool.read_timeout
        if self.timer is None:
            self.timer = loop.call_at(self.deadline, self._check_deadline)
        try:
            await self.waiter
        finally:
            self.waiter = None

    def _check_deadline(self) -> None:
        self.timer = None
        if self.waiter is None or self.closed:  # nobody waits: the next wait sets it again
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self.deadline:
            self._timed_out()
        else:
            self.timer = loop.call_at(self.deadline, self._check_deadline)

    async def send(self, head: bytes, body: bytes | AsyncIterator[bytes] | None) -> None:
        assert self.transport is not None
        self.busy = True
        self._reset()
        if self.closed or self.transport.is_closing():
            raise Disconnected("the connection closed before the request was sent")
        if body is None or isinstance(body, bytes):
            if body and len(body) > LOW_WATER:
                self.transport.write(head)
                self.transport.write(body)
            else:
                self.transport.write(head + body if body else head)
            self.sent = True
            return
        self.transport.write(head)
        try:
            async for chunk in body:
                if chunk:
                    self.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if self.writing_paused:
                    await self._drain()
                if self.error is not None:  # the upstream answered early or hung up
                    return
        except Exception as exc:  # the caller's body failed (too large, gone): abort
            self.transport.close()
            raise Disconnected("the request body could not be sent") from exc
        self.transport.write(b"0\r\n\r\n")
        self.sent = True

    async def _drain(self) -> None:
        self.drained = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.pool.read_timeout):
                await self.drained
        except TimeoutError:
            error = ReadTimedOut("the upstream took nothing of the request within the read "
                                 "timeout")
            self._fail(error)
            raise error from None
        finally:
            self.drained = None
        if self.closed and self.error is None:
            raise Disconnected("the upstream closed the connection while the request was sent")

    async def head(self) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def chunk(self) -> bytes | None:
        """The next piece of the body as it arrives; None at its end."""
        while not self.chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self._wait()
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.reading_paused and self.buffered < LOW_WATER and self.transport:
            self.reading_paused = False
            self.transport.resume_reading()
        return chunk

    def reusable(self) -> bool:
        return (self.complete and self.sent and self.error is None and not self.closed
                and not self.chunks and not self.head_only and not self.until_close
                and self.keep_alive)


class Answer:
    """The upstream's answer: status and head at once, the body as it arrives."""

    __slots__ = ("_connection", "content_length", "raw_headers", "status")

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = connection.status
        self.raw_headers = connection.headers
        self.content_length: int | None = None
        for name, value in connection.headers:
            if name.lower() == b"content-length" and value.isdigit():
                self.content_length = int(value)

    async def read(self) -> bytes:
        parts = []
        while (chunk := await self._connection.chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._connection.chunk()) is not None:
            yield chunk


class Exchange:
    """One request on a pooled connection, as an async context manager (a class rather than a
    generator: this runs for every forwarded request)."""

    __slots__ = ("_body", "_connection", "_head", "_head_only", "_pool")

    def __init__(self, pool: Pool, head: bytes, body: bytes | AsyncIterator[bytes] | None,
                 head_only: bool) -> None:
        self._pool = pool
        self._head = head
        self._body = body
        self._head_only = head_only
        self._connection: _Connection | None = None

    async def __aenter__(self) -> Answer:
        connection = self._connection = await self._pool._acquire()
        connection.head_only = self._head_only
        try:
            await connection.send(self._head, self._body)
            await connection.head()
        except BaseException:
            self._connection = None
            self._pool._release(connection)
            raise
        return Answer(connection)

    async def __aexit__(self, *_: object) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            self._pool._release(connection)


class Pool:
    """Keep-alive connections to one upstream (at most `limit`; more callers wait their turn).
    The most recently used idle connection is reused first; one idle for `IDLE_SECONDS` is
    closed instead."""

    def __init__(self, url: str, limit: int, connect_timeout: float, read_timeout: float
                 ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.base = parts.path.rstrip("/").encode("ascii")
        self.host_header = parts.netloc.encode("idna")
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: list[_Connection] = []
        self._open = 0
        self._turns: deque[asyncio.Future[None]] = deque()

    def exchange(self, method: str, target: bytes, headers: Headers,
                 body: bytes | AsyncIterator[bytes] | None) -> Exchange:
        """Send one request and yield its answer once its head arrived (`async with`); the
        connection goes back to the pool if the answer was read to its end, else it is
        closed."""
        return Exchange(self, self._head(method, target, headers, body), body,
                        method == "HEAD")

    def _head(self, method: str, target: bytes, headers: Headers,
              body: bytes | AsyncIterator[bytes] | None) -> bytes:
        lines = [b"%s %s%s HTTP/1.1\r\nhost: %s\r\n" % (
            method.encode("ascii"), self.base, target, self.host_header)]
        lines += [b"%s: %s\r\n" % header for header in headers]
        if isinstance(body, bytes):
            if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
                lines.append(b"content-length: %d\r\n" % len(body))
        elif body is not None:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        head = b"".join(lines)
        # Each piece ends in the one CR LF put there above (the first in two): any other is a
        # line break in a method, target, header name or value, which would split the request.
        breaks = len(lines) + 1
        if head.count(b"\n") != breaks or head.count(b"\r") != breaks:
            raise ValueError("a header name or value holds a line break")
        return head

    async def _acquire(self) -> _Connection:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                return connection
            self._close(connection)
        while self._open >= self.limit:
            turn = loop.create_future()
            self._turns.append(turn)
            try:
                await turn
            except BaseException:
                if turn in self._turns:
                    self._turns.remove(turn)
                elif not turn.cancelled():
                    self._next_turn()  # handed a turn it cannot take: pass it on
                raise
            if self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    return connection
                self._close(connection)
        self._open += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
        except TimeoutError:
            self._open -= 1
            self._next_turn()
            raise ConnectTimedOut(f"no connection within {self.connect_timeout} s") from None
        except OSError as exc:  # refused, unreachable, name unknown, TLS (ssl.SSLError)
            self._open -= 1
            self._next_turn()
            raise ConnectFailed(f"no connection: {type(exc).__name__}") from None
        except BaseException:
            self._open -= 1
            self._next_turn()
            raise
        protocol.counted = True
        return protocol

    def _release(self, connection: _Connection) -> None:
        connection.busy = False
        if connection.reusable():
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        else:
            self._close(connection)
        self._next_turn()

    def _close(self, connection: _Connection) -> None:
        if connection.transport is not None and not connection.transport.is_closing():
            connection.transport.close()
        self.forget(connection)

    def forget(self, connection: _Connection) -> None:
        """A connection closed (by either side): it no longer counts against the limit."""
        if connection.counted:
            connection.counted = False
            self._open -= 1
            if connection in self._idle:
                self._idle.remove(connection)
            self._next_turn()

    def _next_turn(self) -> None:
        while self._turns:
            turn = self._turns.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    def close(self) -> None:
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()
        self._idle.clear()
