"""`orchgate serve`'s HTTP protocol (proxy/server.py) under a real uvicorn server: an answer
started and ended in one step goes to the socket in one write; streams, pipelined requests,
keep-alive and websockets behave as with uvicorn's own protocol."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from websockets.sync.client import connect

from proxy.server import Protocol
from tests.harness import LOOPBACK, loopback_socket, wait_for

writes: list[bytes] = []  # every write that reached a socket's own transport, in order


class CountingTransport(asyncio.Transport):
    """Between the socket's transport and the protocol under test: records each write."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self.transport = transport

    def write(self, data: Any) -> None:
        writes.append(bytes(data))
        self.transport.write(data)

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()


class CountedProtocol(Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CountingTransport(transport))


release = threading.Event()  # lets /stream's second chunk go


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()  # connect
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo " + message["text"]})
        await send({"type": "websocket.close"})
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.to_thread(release.wait, 5)
        await send({"type": "http.response.body", "body": b"second"})
        return
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    sock = loopback_socket()
    config = uvicorn.Config(app, http=CountedProtocol, loop="uvloop", ws="websockets-sansio",
                            lifespan="on", log_config=None, access_log=False,
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 10, "server start-up")
    assert server.started
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive()


def read_until(conn: socket.socket, end: bytes, count: int = 1) -> bytes:
    data = b""
    while data.count(end) < count:
        chunk = conn.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_an_answer_started_and_ended_in_one_step_is_one_write(port: int) -> None:
    writes.clear()
    with socket.create_connection((LOOPBACK, port), timeout=5) as conn:
        for path in (b"/a", b"/bb", b"/ccc"):  # keep-alive: one connection, three answers
            conn.sendall(b"GET " + path + b" HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = read_until(conn, b"\r\n\r\n" + path)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(writes) == 3, writes
    assert [w.rsplit(b"\r\n\r\n", 1)[1] for w in writes] == [b"/a", b"/bb", b"/ccc"]


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    with socket.create_connection((LOOPBACK, port), timeout=5) as conn:
        conn.sendall(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\nGET /two HTTP/1.1\r\nhost: x\r\n\r\n")
        answers = read_until(conn, b"HTTP/1.1 200 OK", 2)
        while not answers.endswith(b"/two"):
            answers += conn.recv(65536)
    assert answers.index(b"/one") < answers.index(b"/two")


def test_a_stream_goes_out_as_it_is_produced(port: int) -> None:
    release.clear()
    with socket.create_connection((LOOPBACK, port), timeout=5) as conn:
        conn.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        # The first chunk arrives while the application still holds the second.
        first = read_until(conn, b"first\r\n")
        assert b"transfer-encoding: chunked" in first and b"second" not in first
        release.set()
        rest = read_until(conn, b"0\r\n\r\n")
    assert b"6\r\nsecond\r\n" in rest


def test_a_connection_closed_by_the_answer_gets_all_of_it_first(port: int) -> None:
    with socket.create_connection((LOOPBACK, port), timeout=5) as conn:
        conn.sendall(b"GET /bye HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"\r\n\r\n/bye")


def test_a_websocket_upgrade_works_over_it(port: int) -> None:
    with connect(f"ws://{LOOPBACK}:{port}/ws", open_timeout=5, close_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "echo hello"
