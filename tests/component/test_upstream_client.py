"""orchgate's HTTP/1.1 client for forwarding (proxy/upstream/h1.py) against loopback servers
that answer byte for byte as each test says, on asyncio's loop and on uvloop (the server's)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.errors import Reject
from proxy.settings import Limits, UpstreamSettings
from proxy.upstream import h1
from proxy.upstream.forward import Upstream as Forwarding

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    def runner(main: Coroutine[Any, Any, None]) -> None:
        if request.param == "uvloop":
            uvloop.run(asyncio.wait_for(main, 20))
        else:
            asyncio.run(asyncio.wait_for(main, 20))
    return runner


class Upstream:
    """A loopback server; `handler` serves each connection. Counts connections and keeps
    every request head it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def pool(self, limit: int = 10, read_timeout: float = 5.0) -> h1.Pool:
        return h1.Pool(self.url, limit, connect_timeout=2.0, read_timeout=read_timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        return head


def answering(*answers: bytes, then_close: bool = False) -> Callable[[Upstream], Handler]:
    """A handler that reads a request head and writes the next answer, for each answer."""
    def make(upstream: Upstream) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for answer in answers:
                await upstream.head(reader)
                writer.write(answer)
                await writer.drain()
            if not then_close:
                await reader.read()  # until the client closes
        return handler
    return make


def unanswering(hang_up: bool) -> Callable[[Upstream], Handler]:
    """A handler that reads the request head and never answers: it hangs up, or it waits."""
    def make(upstream: Upstream) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await upstream.head(reader)
            if not hang_up:
                await reader.read()  # until the client closes
        return handler
    return make


def serving(make: Callable[[Upstream], Handler]) -> Upstream:
    upstream = Upstream(lambda r, w: asyncio.sleep(0))
    upstream.handler = make(upstream)
    return upstream


async def get(pool: h1.Pool, path: bytes = b"/x", method: str = "GET",
              headers: h1.Headers | None = None,
              body: bytes | AsyncIterator[bytes] | None = None) -> tuple[int, h1.Headers, bytes]:
    async with pool.exchange(method, path, headers or [], body) as answer:
        return answer.status, answer.raw_headers, await answer.read()


def test_connections_are_kept_alive_and_reused(run: Any) -> None:
    async def main() -> None:
        async with serving(answering(OK, OK, OK)) as upstream:
            pool = upstream.pool()
            for _ in range(3):
                assert await get(pool, b"/api/v2/dags?limit=1", headers=[(b"x-a", b"1")]) == (
                    200, [(b"content-length", b"2"), (b"content-type", b"application/json")],
                    b"{}")
            assert upstream.connections == 1
            head = upstream.heads[0].decode()
            assert head.startswith("GET /api/v2/dags?limit=1 HTTP/1.1\r\n")
            assert f"host: {upstream.url[7:]}\r\n" in head and "x-a: 1\r\n" in head
            pool.close()
    run(main())


def test_a_base_path_of_the_upstream_url_prefixes_every_request(run: Any) -> None:
    async def main() -> None:
        async with serving(answering(OK)) as upstream:
            pool = h1.Pool(upstream.url + "/base/", 10, 2.0, 5.0)
            assert (await get(pool, b"/api/v2/version"))[0] == 200
            assert upstream.heads[0].startswith(b"GET /base/api/v2/version HTTP/1.1\r\n")
            pool.close()
    run(main())


def test_a_chunked_answer_streams_as_it_comes_and_the_connection_is_reused(run: Any) -> None:
    async def main() -> None:
        step = asyncio.Event()

        def make(upstream: Upstream) -> Handler:
            async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                              ) -> None:
                await upstream.head(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                             b"6\r\nfirst\n\r\n")
                await step.wait()  # the client must have the first line before the second
                writer.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
                await upstream.head(reader)
                writer.write(OK)
                await reader.read()
            return handler

        async with serving(make) as upstream:
            pool = upstream.pool()
            async with pool.exchange("GET", b"/wait", [], None) as answer:
                assert answer.content_length is None
                chunks = answer.iter_chunks()
                assert await anext(chunks) == b"first\n"
                step.set()
                assert [chunk async for chunk in chunks] == [b"second\n"]
            assert (await get(pool))[0] == 200
            assert upstream.connections == 1
            pool.close()
    run(main())


def test_an_answer_delimited_by_the_close_is_read_whole_and_not_reused(run: Any) -> None:
    async def main() -> None:
        answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"x" * 100_000
        async with serving(answering(answer, then_close=True)) as upstream:
            pool = upstream.pool()
            assert await get(pool) == (200, [(b"connection", b"close")], b"x" * 100_000)
            async with serving(answering(OK)) as other:
                assert pool._open == 0 and not pool._idle  # closed, not pooled
                other.pool().close()
            pool.close()
    run(main())


def test_head_ends_at_the_answers_head_and_the_connection_is_not_reused(run: Any) -> None:
    async def main() -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n"
        async with serving(answering(head)) as upstream:
            pool = upstream.pool()
            async with pool.exchange("HEAD", b"/x", [], None) as answer:
                assert answer.status == 200 and answer.content_length == 5000
                assert await answer.read() == b""
            assert pool._open == 0 and not pool._idle  # closed: no body follows, none read
    run(main())


def test_an_interim_answer_is_skipped(run: Any) -> None:
    async def main() -> None:
        answer = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK
        async with serving(answering(answer)) as upstream:
            pool = upstream.pool()
            status, headers, body = await get(pool)
            assert (status, body) == (200, b"{}")
            assert (b"link", b"</a>") not in headers
            pool.close()
    run(main())


def test_a_refused_connection_is_connect_failed(run: Any) -> None:
    async def main() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # bound, not listening: refused
            pool = h1.Pool(f"http://127.0.0.1:{port}", 10, 2.0, 5.0)
            with pytest.raises(h1.ConnectFailed):
                await get(pool)
            assert pool._open == 0
    run(main())


def test_an_upstream_that_hangs_up_without_answering_is_disconnected(run: Any) -> None:
    async def main() -> None:
        async with serving(unanswering(hang_up=True)) as upstream:
            pool = upstream.pool()
            with pytest.raises(h1.Disconnected):
                await get(pool, method="POST", body=b"{}")
            assert upstream.heads and pool._open == 0
    run(main())


def test_a_body_that_breaks_off_or_garbage_is_a_broken_answer(run: Any) -> None:
    async def main() -> None:
        cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this"
        async with serving(answering(cut, then_close=True)) as upstream:
            pool = upstream.pool()
            async with pool.exchange("GET", b"/x", [], None) as answer:
                assert answer.status == 200
                with pytest.raises(h1.BrokenAnswer):
                    await answer.read()
            assert pool._open == 0
        async with serving(answering(b"HTTP/1.1 2x0 what\r\n\r\n")) as upstream:
            pool = upstream.pool()
            with pytest.raises(h1.BrokenAnswer):
                await get(pool)
            assert pool._open == 0
    run(main())


def test_a_silent_upstream_times_out(run: Any) -> None:
    async def main() -> None:
        async with serving(unanswering(hang_up=False)) as upstream:
            pool = upstream.pool(read_timeout=0.3)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(h1.ReadTimedOut):
                await get(pool)
            assert 0.25 < loop.time() - started < 2.0
            assert pool._open == 0
    run(main())


def test_the_read_timeout_counts_from_each_wait_on_a_reused_connection(run: Any) -> None:
    """A connection's one timer, set during an earlier exchange, does not cut a later one
    short; it still ends a wait that outlasts the timeout, and the pool goes on."""
    delays = [0.0, 0.25, 0.25, 1.0]

    def make(upstream: Upstream) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while delays:
                await upstream.head(reader)
                await asyncio.sleep(delays.pop(0))
                writer.write(OK)
            await reader.read()
        return handler

    async def main() -> None:
        async with serving(make) as upstream:
            pool = upstream.pool(read_timeout=0.4)
            loop = asyncio.get_running_loop()
            assert (await get(pool))[0] == 200
            await asyncio.sleep(0.3)  # idle, in the pool, past most of the first deadline
            for _ in range(2):  # each answer comes 0.25 s into its own wait: in time
                assert (await get(pool))[0] == 200
            assert upstream.connections == 1
            started = loop.time()
            with pytest.raises(h1.ReadTimedOut):
                await get(pool)
            assert 0.35 < loop.time() - started < 0.9
            assert pool._open == 0
    run(main())


def test_a_streamed_body_goes_chunked_and_a_failing_one_aborts_the_request(run: Any) -> None:
    async def main() -> None:
        received: list[bytes] = []

        def make(upstream: Upstream) -> Handler:
            async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                              ) -> None:
                await upstream.head(reader)
                received.append(await reader.readuntil(b"0\r\n\r\n"))
                writer.write(OK)
                await reader.read()
            return handler

        async def body() -> AsyncIterator[bytes]:
            yield b'{"a":'
            yield b"1}"

        async def failing() -> AsyncIterator[bytes]:
            yield b'{"a":'
            raise ValueError("the caller went away")

        async with serving(make) as upstream:
            pool = upstream.pool()
            assert (await get(pool, method="POST", body=body()))[0] == 200
            assert b"transfer-encoding: chunked\r\n" in upstream.heads[0]
            assert received == [b'5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n']
            with pytest.raises(h1.Disconnected):
                await get(pool, method="POST", body=failing())
            assert pool._open == 0 and not pool._idle  # that connection closed mid-request
            assert len(received) == 1  # the upstream never saw a whole second body
    run(main())


def test_a_line_break_in_a_header_is_refused_before_anything_is_sent(run: Any) -> None:
    async def main() -> None:
        async with serving(answering(OK)) as upstream:
            pool = upstream.pool()
            for header in ((b"x-a", b"1\r\nx-injected: 1"), (b"x-a\nb", b"1"),
                           (b"x-a", b"1\rx-b: 2"), (b"x-a\r", b"1"), (b"x-a", b"\n")):
                with pytest.raises(ValueError, match="line break"):
                    await get(pool, headers=[(b"x-ok", b"1"), header])
            with pytest.raises(ValueError, match="line break"):
                await get(pool, b"/api/v2/dags HTTP/1.1\r\nx-smuggled: 1\r\n\r\nGET /")
            assert upstream.connections == 0
    run(main())


def test_the_pool_keeps_to_its_limit_and_every_caller_gets_a_turn(run: Any) -> None:
    async def main() -> None:
        def make(upstream: Upstream) -> Handler:
            async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                              ) -> None:
                while True:
                    await upstream.head(reader)
                    await asyncio.sleep(0.02)
                    writer.write(OK)
            return handler

        async with serving(make) as upstream:
            pool = upstream.pool(limit=2)
            results = await asyncio.gather(*(get(pool) for _ in range(10)))
            assert [r[0] for r in results] == [200] * 10
            assert upstream.most_open == 2 and upstream.connections == 2
            pool.close()
    run(main())


def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_it_all(run: Any) -> None:
    async def main() -> None:
        size = 8 * 1024 * 1024
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"y" * size
        async with serving(answering(answer)) as upstream:
            pool = upstream.pool()
            async with pool.exchange("GET", b"/big", [], None) as answer_:
                await asyncio.sleep(0.3)  # the caller reads nothing for a while
                connection = answer_._connection
                assert connection.reading_paused
                assert connection.buffered < h1.HIGH_WATER + 1024 * 1024
                assert len(await answer_.read()) == size
            assert len(pool._idle) == 1
            pool.close()
    run(main())


def test_a_connection_closed_while_idle_is_not_used_again(run: Any) -> None:
    async def main() -> None:
        keep_alive_then_close = answering(OK, then_close=True)
        async with serving(keep_alive_then_close) as upstream:
            pool = upstream.pool()
            assert (await get(pool))[0] == 200
            for _ in range(100):  # the upstream closes its end right after answering
                if not pool._idle:
                    break
                await asyncio.sleep(0.01)
            assert not pool._idle and pool._open == 0
            assert (await get(pool))[0] == 200  # on a new connection
            assert upstream.connections == 2
            pool.close()
    run(main())


def test_an_answer_left_unread_closes_its_connection(run: Any) -> None:
    async def main() -> None:
        big = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"z" * 1_000_000
        async with serving(answering(big, OK)) as upstream:
            pool = upstream.pool()
            async with pool.exchange("GET", b"/x", [], None) as answer:
                assert answer.status == 200  # the caller went away before reading the body
            assert pool._open == 0 and not pool._idle
            assert (await get(pool))[0] == 200
            assert upstream.connections == 2
            pool.close()
    run(main())


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made for the test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orchgate test upstream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "upstream.pem", directory / "upstream.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_an_https_upstream_is_verified_against_the_trusted_certificates(
        run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert_file, key_file = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)

    async def main() -> None:
        upstream = Upstream(lambda r, w: asyncio.sleep(0))
        upstream.handler = answering(OK, OK)(upstream)
        server = await asyncio.start_server(upstream._serve, "127.0.0.1", 0, ssl=tls)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
            untrusting = h1.Pool(url, 10, 2.0, 5.0)  # the system's CAs only
            with pytest.raises(h1.ConnectFailed):
                await get(untrusting)
            monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # as an operator would
            trusting = h1.Pool(url, 10, 2.0, 5.0)
            assert await get(trusting) == (200, [(b"content-length", b"2"),
                                                 (b"content-type", b"application/json")], b"{}")
            assert (await get(trusting))[0] == 200
            assert upstream.connections == 1  # kept alive over TLS too
            trusting.close()
        finally:
            server.close()
    run(main())


def test_a_failure_after_the_answer_was_handed_over_is_the_upstreams(run: Any) -> None:
    """Through forwarding (upstream/forward.py): an answer whose body stalls is a 504, one cut
    short a 502 upstream-error, and the caller's own error while reading passes through."""
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"

    def make(upstream: Upstream) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await upstream.head(reader)
            writer.write(head + b"x" * 10)
            await writer.drain()
            if upstream.connections == 2:
                writer.close()  # cut short
                return
            await reader.read()  # stalls (and the third waits for the caller to give up)
        return handler

    async def main() -> None:
        async with serving(make) as upstream:
            forwarding = Forwarding(UpstreamSettings("airflow", upstream.url, "/airflow"),
                                    Limits(connect_timeout_seconds=2, read_timeout_seconds=0.3))
            await forwarding.start()

            async def read(fail: bool = False) -> bytes:
                async with forwarding.request("GET", b"/x", [], None) as answer:
                    assert answer.status == 200  # handed over
                    if fail:
                        raise KeyError("the caller's own")
                    return await answer.read()

            try:
                for status, slug in ((504, "upstream-timeout"), (502, "upstream-error")):
                    with pytest.raises(Reject) as rejected:
                        await read()
                    assert (rejected.value.status, rejected.value.slug) == (status, slug)
                with pytest.raises(KeyError, match="the caller's own"):
                    await read(fail=True)
                assert forwarding.pool._open == 0 and upstream.connections == 3
            finally:
                await forwarding.close()
    run(main())
