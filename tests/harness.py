"""Component-test harness: orchgate, as it runs in production, between two fakes on loopback.

    FakeIdP            an OIDC issuer (discovery + JWKS of a key made at test time) that mints
                       RS256 access tokens
    RecordingUpstream  one HTTP/websocket server that records every request byte for byte and
                       answers as each test scripts it (JSON, slow, streamed NDJSON, Prefect's
                       websocket protocol); it stands in for Airflow and Prefect at once
    Orchgate           `proxy.app.create_app(settings)` under a real `uvicorn.Server`
                       (proxy.server.Protocol over httptools, uvloop, lifespan on) in a
                       background thread

Each server runs on its own event loop in its own thread, so tests can be plain functions
driving real sockets (httpx2, `websockets.sync`, or raw bytes via `Orchgate.exchange`). Every
socket is bound to 127.0.0.1 on a port the kernel picks; every wait has a deadline.

This is a unit-level fake for the proxy's own forwarding tests; the integration tests use the
real oidc-provider, Airflow and Prefect (deploy/local).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qs

import httpx2
import jwt
import pytest
import uvicorn
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from proxy.app import OrchgateApp, create_app
from proxy.settings import Settings, parse_settings

# uvicorn's websocket implementation: WS_IMPL is what `orchgate serve` runs (proxy/cli.py; keep
# them in step). Socket tests also run on uvicorn's older ws="websockets" (WS_IMPLS), built on
# `websockets.legacy`: uvicorn 0.54 and websockets 14+ deprecate it with warnings when it is
# imported and on every connection it accepts. Those warnings are raised in the server thread,
# where `filterwarnings = error` would kill the connection; tests that may run it carry
# `legacy_websocket_warnings`, which ignores exactly them.
WS_IMPL = "websockets-sansio"
WS_IMPLS = ("websockets-sansio", "websockets")
legacy_websocket_warnings = pytest.mark.filterwarnings(
    "ignore:websockets.legacy is deprecated:DeprecationWarning",
    "ignore:The `websockets` implementation is deprecated:uvicorn.config.UvicornDeprecationWarning",
    "ignore:remove second argument of ws_handler:DeprecationWarning",
)

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"
LOOPBACK = "127.0.0.1"
AUDIENCE = "orchgate"
START_SECONDS = 15.0  # to start or stop any server
WAIT_SECONDS = 5.0  # default bound for polling waits

T = TypeVar("T")


# -- small utilities -----------------------------------------------------------------------


def loopback_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a free port (not yet listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    return sock


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs.

    The socket stays bound but never listens, so the kernel answers every SYN with a reset and
    no other process can take the port meanwhile (unlike closing a socket and hoping).
    """
    sock = loopback_socket()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def wait_for(predicate: Callable[[], T | None], timeout: float = WAIT_SECONDS,
             what: str = "condition", interval: float = 0.02) -> T:
    """Poll until `predicate()` returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied; nested mappings merge, a `None` value deletes a key."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class LoopThread:
    """An asyncio event loop running in a daemon thread; `call` runs a coroutine on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = START_SECONDS) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(TimeoutError):
            self.call(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(START_SECONDS)
        if self._thread.is_alive():
            raise RuntimeError(f"thread {self._thread.name} did not stop")
        self.loop.close()


class _AiohttpServer(abc.ABC):
    """A low-level aiohttp server (no router, no path normalisation) on a LoopThread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop_thread = LoopThread(name)
        self._runner: web.ServerRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @abc.abstractmethod
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request (each server's own behaviour)."""

    async def _start(self) -> None:
        # handler_cancellation: a handler whose client went away (orchgate timing out on a
        # slow answer) is cancelled rather than left sleeping until shutdown.
        server = web.Server(self.handle, handler_cancellation=True)
        self._runner = web.ServerRunner(server, shutdown_timeout=2.0)
        await self._runner.setup()
        sock = loopback_socket()
        try:
            await web.SockSite(self._runner, sock).start()  # the site's server owns it now
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> Self:
        self._loop_thread.start()
        try:
            self._loop_thread.call(self._start())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            self._loop_thread.call(self._stop())
        self._loop_thread.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the identity provider -----------------------------------------------------------------


class FakeIdP(_AiohttpServer):
    """An OIDC issuer on loopback: discovery, a JWKS, and RS256 access tokens with a `kid`."""

    def __init__(self) -> None:
        super().__init__("fake-idp")
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []  # kids in the JWKS, in order
        self.requests: list[str] = []  # paths asked for, in order
        self.kid = self.add_key()

    @property
    def issuer(self) -> str:
        return self.url

    def add_key(self, kid: str | None = None, *, publish: bool = True) -> str:
        """Make a new RSA key; published in the JWKS unless `publish=False` (a rogue key)."""
        kid = kid or f"k{len(self.keys) + 1}-{secrets.token_hex(4)}"
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            jwk = RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def claims(self, sub: str, *, groups: Sequence[str] = (), client_id: str = "orchgate-cli",
               aud: str | list[str] = AUDIENCE, exp_in: float = 300,
               **extra: Any) -> dict[str, Any]:
        """Access-token claims (RFC 9068); `extra` adds or replaces claims, None removes one."""
        now = int(time.time())
        base: dict[str, Any] = {"iss": self.issuer, "sub": sub, "aud": aud, "iat": now,
                                "nbf": now, "exp": int(now + exp_in), "client_id": client_id,
                                "groups": list(groups), "jti": secrets.token_hex(8)}
        return {k: v for k, v in {**base, **extra}.items() if v is not None}

    def sign(self, claims: Mapping[str, Any], *, kid: str | None = None,
             key_of: str | None = None, headers: Mapping[str, Any] | None = None) -> str:
        """Sign arbitrary claims with the key `kid` names (published or not), or forge: name
        `kid` in the header but sign with the key of `key_of`."""
        kid = kid or self.kid
        return jwt.encode(dict(claims), self.keys[key_of or kid], algorithm="RS256",
                          headers={"kid": kid, "typ": "at+jwt", **(headers or {})})

    def token(self, sub: str, groups: Sequence[str] = (), client_id: str = "orchgate-cli",
              aud: str | list[str] = AUDIENCE, exp_in: float = 300, **extra: Any) -> str:
        return self.sign(self.claims(sub, groups=groups, client_id=client_id, aud=aud,
                                     exp_in=exp_in, **extra))

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests.append(request.path)
        if request.path == "/.well-known/openid-configuration":
            return web.json_response({
                "issuer": self.issuer, "jwks_uri": self.url + "/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
            })
        if request.path == "/jwks":
            return web.json_response(self.jwks())
        return web.json_response({"error": "not_found"}, status=404)


# -- the upstream ---------------------------------------------------------------------------


@dataclass(slots=True)
class Received:
    """One request as the upstream saw it: raw request-target and headers, in order."""

    method: str
    target: str  # the raw request-target: path and query exactly as sent
    headers: tuple[tuple[str, str], ...]
    received_at: float  # time.monotonic() when the headers arrived
    body: bytes = b""  # as much as has arrived
    complete: bool = False  # the whole body arrived (False: still arriving, or aborted)
    websocket: bool = False

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    @property
    def params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    def all(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive)."""
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header(self, name: str) -> str | None:
        """The value of header `name`; None if absent; fails if it was sent more than once."""
        values = self.all(name)
        assert len(values) <= 1, f"header {name} sent {len(values)} times: {values}"
        return values[0] if values else None

    @property
    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


@dataclass(frozen=True, slots=True)
class Reply:
    """A fixed answer: JSON `data` (or raw `body`), after `delay` seconds before the headers."""

    data: Any = None
    status: int = 200
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


@dataclass(slots=True)
class Stream:
    """A streamed answer: each line written and flushed, `interval` seconds apart.

    `sent_at[i]` is the time.monotonic() at which line i was handed to the socket: a test
    proves streaming by seeing line 0 before `sent_at[-1]`.
    """

    lines: Sequence[bytes]
    interval: float
    status: int = 200
    content_type: str = "application/x-ndjson"
    sent_at: list[float] = field(default_factory=list)


Answer = Reply | Stream
Script = Answer | Callable[[Received], Answer]


@dataclass(slots=True)
class SocketSession:
    """One websocket the upstream accepted (Prefect's `prefect` subprotocol)."""

    path: str
    request: Received
    auth_token: str | None = None
    authenticated: bool = False
    messages: list[str | bytes] = field(default_factory=list)  # after the auth message
    closed: bool = False


class RecordingUpstream(_AiohttpServer):
    """Stands in for Airflow and Prefect: records every request, answers as scripted.

    Unscripted requests get `default` (200 `{"recorded": true}`). Scripts are keyed on
    (method, raw path without query); method "*" matches any.
    """

    def __init__(self) -> None:
        super().__init__("recording-upstream")
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._scripts: dict[tuple[str, str], Script] = {}
        self._sockets: dict[str, str] = {}  # path → the auth string it expects
        self.sessions: list[SocketSession] = []
        self.default: Script = Reply({"recorded": True})
        self._active = 0

    # scripting

    def on(self, method: str, path: str, answer: Script) -> None:
        self._scripts[(method.upper(), path)] = answer

    def prefect_socket(self, path: str, auth_string: str) -> None:
        """A websocket at `path` speaking Prefect's protocol: the first message must be
        `{"type": "auth", "token": auth_string}`, answered `{"type": "auth_success"}`;
        every later frame is recorded and echoed back."""
        self._sockets[path] = auth_string

    def reset(self) -> None:
        """Forget what was received (scripts stay)."""
        with self._lock:
            self._received.clear()
            self.sessions.clear()

    # inspection

    def requests(self, path: str | None = None, method: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received
                    if (path is None or r.path == path)
                    and (method is None or r.method == method.upper())]

    def wait_idle(self, timeout: float = WAIT_SECONDS) -> None:
        """Wait until no request is being handled (e.g. an aborted body has been noticed)."""
        wait_for(lambda: self._active == 0 or None, timeout, "upstream idle")

    # serving

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        received = Received(
            method=request.method, target=request.raw_path,
            headers=tuple((k.decode("latin-1"), v.decode("latin-1"))
                          for k, v in request.raw_headers),
            received_at=time.monotonic(),
        )
        with self._lock:
            self._received.append(received)
            self._active += 1
        try:
            if received.path in self._sockets and \
                    request.headers.get("Upgrade", "").lower() == "websocket":
                received.websocket = received.complete = True
                return await self._socket(request, received)
            async for chunk in request.content.iter_any():  # a partial body stays visible
                received.body += chunk
            received.complete = True
            script = self._scripts.get((received.method, received.path)) \
                or self._scripts.get(("*", received.path)) or self.default
            answer = script(received) if callable(script) else script
            if isinstance(answer, Stream):
                return await self._stream(request, answer)
            if answer.delay:
                await asyncio.sleep(answer.delay)
            body = answer.body if answer.body is not None else json.dumps(answer.data).encode()
            headers = dict(answer.headers)
            if answer.body is None:
                headers.setdefault("Content-Type", "application/json")
            return web.Response(status=answer.status, body=body, headers=headers)
        finally:
            with self._lock:
                self._active -= 1

    async def _stream(self, request: web.BaseRequest, stream: Stream) -> web.StreamResponse:
        response = web.StreamResponse(status=stream.status,
                                      headers={"Content-Type": stream.content_type})
        await response.prepare(request)
        for i, line in enumerate(stream.lines):
            if i:
                await asyncio.sleep(stream.interval)
            await response.write(line)  # write() drains: the line is on the socket
            stream.sent_at.append(time.monotonic())
        await response.write_eof()
        return response

    async def _socket(self, request: web.BaseRequest, received: Received) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("prefect",))
        await ws.prepare(request)
        session = SocketSession(received.path, received)
        with self._lock:
            self.sessions.append(session)
        try:
            first = await ws.receive(timeout=WAIT_SECONDS)
            try:
                auth = json.loads(first.data) if first.type == WSMsgType.TEXT else None
            except ValueError:
                auth = None
            if isinstance(auth, dict) and auth.get("type") == "auth":
                session.auth_token = auth.get("token")
            if session.auth_token != self._sockets[received.path]:
                # prefect/server/utilities/subscriptions.py: a wrong token closes with 1008.
                await ws.close(code=1008, message=b"Invalid token")
                return ws
            session.authenticated = True
            await ws.send_str(json.dumps({"type": "auth_success"}))
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    session.messages.append(message.data)
                    await ws.send_str(message.data)
                elif message.type == WSMsgType.BINARY:
                    session.messages.append(message.data)
                    await ws.send_bytes(message.data)
            return ws
        finally:
            session.closed = True


# -- orchgate itself ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawResponse:
    """What came back on a raw socket (see `Orchgate.exchange`)."""

    raw: bytes

    @property
    def status(self) -> int | None:
        line = self.raw.split(b"\r\n", 1)[0].split(b" ")
        return int(line[1]) if len(line) > 1 and line[1].isdigit() else None

    @property
    def headers(self) -> list[tuple[str, str]]:
        head = self.raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        pairs = (line.partition(b":") for line in head)
        return [(k.decode("latin-1").strip().lower(), v.decode("latin-1").strip())
                for k, _, v in pairs]

    @property
    def body(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[2]


class Orchgate:
    """The real app under a real uvicorn, in front of `idp` and `upstream`.

    Both upstreams (airflow and prefect) point at `upstream` unless `airflow_url` /
    `prefect_url` say otherwise; `overrides` is deep-merged into the settings mapping; `ws`
    is uvicorn's websocket implementation.
    """

    _counter = itertools.count()

    def __init__(self, base: Path, idp: FakeIdP, upstream: RecordingUpstream, *,
                 overrides: Mapping[str, Any] | None = None, airflow_url: str | None = None,
                 prefect_url: str | None = None, ws: str = WS_IMPL) -> None:
        self.base = base
        self.ws = ws
        base.mkdir(parents=True, exist_ok=True)
        # HS512 keys shorter than the hash (64 bytes) make pyjwt warn (RFC 7518 §3.2).
        self.airflow_secret = secrets.token_hex(64)
        self.prefect_auth = "orchgate:" + secrets.token_hex(16)
        (base / "airflow-jwt-secret").write_text(self.airflow_secret, encoding="utf-8")
        (base / "prefect-auth-string").write_text(self.prefect_auth, encoding="utf-8")
        self.audit_file = base / "audit.jsonl"
        mapping = {
            "listen": {"host": LOOPBACK, "port": 0},
            "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
            "upstreams": {
                "airflow": {"url": airflow_url or upstream.url,
                            "credential": {"signing_secret_file": "airflow-jwt-secret"}},
                "prefect": {"url": prefect_url or upstream.url,
                            "credential": {"auth_string_file": "prefect-auth-string"}},
            },
            "policy": {"model": str(POLICIES / "model.conf"),
                       "files": [str(POLICIES / "policy.csv")]},
            "audit": {"file": "audit.jsonl", "stdout": False},
        }
        self.mapping = deep_merge(mapping, overrides or {})
        self.settings: Settings = parse_settings(self.mapping, source="harness", base=base)
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.app: OrchgateApp | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def metrics_url(self) -> str:
        """The metrics endpoint (settings `metrics`, port 0: the one the lifespan bound)."""
        assert self.app is not None and self.app.metrics_port, "metrics are not enabled"
        return f"http://{LOOPBACK}:{self.app.metrics_port}/metrics"

    def ws_url(self, path: str) -> str:
        return f"ws://{LOOPBACK}:{self.port}{path}"

    def start(self) -> Self:
        self._sock = loopback_socket()
        self.port = self._sock.getsockname()[1]
        # The options of `orchgate serve` (proxy/cli.py), minus logging configuration: the
        # test process keeps its own.
        self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app, http="proxy.server:Protocol", loop="uvloop", ws=self.ws,
            lifespan="on", proxy_headers=False, server_header=False, access_log=False,
            log_config=None, timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]},
                                        name=f"orchgate-{next(self._counter)}", daemon=True)
        self._thread.start()
        server, thread = self._server, self._thread
        try:
            wait_for(lambda: server.started or not thread.is_alive(), START_SECONDS,
                     "orchgate start-up")
        except TimeoutError:
            self.stop()
            raise
        if not server.started:
            self.stop()
            raise RuntimeError("orchgate did not start (see the captured log)")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(START_SECONDS)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(START_SECONDS)
            alive = self._thread.is_alive()
            self._server = self._thread = None
            if alive:
                raise RuntimeError("orchgate did not stop")
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # clients

    def client(self, **kwargs: Any) -> httpx2.Client:
        """An HTTP client for orchgate (never an environment proxy: this is loopback)."""
        return httpx2.Client(base_url=self.url, timeout=kwargs.pop("timeout", 10.0),
                             trust_env=False, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.url, timeout=kwargs.pop("timeout", 10.0),
                                  trust_env=False, **kwargs)

    def exchange(self, data: bytes, timeout: float = WAIT_SECONDS) -> RawResponse:
        """Send raw bytes on a new connection; read until the server closes it or `timeout`
        passes (send `Connection: close` to get the answer without waiting)."""
        with socket.create_connection((LOOPBACK, self.port), timeout=timeout) as sock:
            sock.sendall(data)
            chunks: list[bytes] = []
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    chunk = sock.recv(65536)
                except (TimeoutError, ConnectionResetError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        return RawResponse(b"".join(chunks))

    # the audit trail

    def audit_records(self) -> list[dict[str, Any]]:
        """Every request's audit record written so far, parsed (the trail's write-ahead
        intents, checkpoints and start records are in `audit_trail`)."""
        return [r for r in self.audit_trail() if r.get("event") == "request"]

    def audit_trail(self) -> list[dict[str, Any]]:
        """Every line of the audit file, parsed. A request's record reaches the file within
        5 ms of its answer (audit/sinks.py): written out first."""
        if self.app is not None:
            self.app.pipeline.audit.flush()
        if not self.audit_file.exists():
            return []
        # One record a line, split on "\n" only: str.splitlines() also splits on U+2028,
        # U+0085 and the like, which JSON leaves unescaped inside a string (a hostile path).
        lines = self.audit_file.read_text(encoding="utf-8").split("\n")
        return [json.loads(line) for line in lines if line.strip()]

    def audit_where(self, predicate: Callable[[dict[str, Any]], bool],
                    timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        """The first audit record matching `predicate`, waiting for it to be written (the
        record of a request is written after its response has been sent)."""
        def find() -> dict[str, Any] | None:
            return next((r for r in self.audit_records() if predicate(r)), None)
        return wait_for(find, timeout, "audit record")

    def audit_record(self, request_id: str, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        return self.audit_where(lambda r: r.get("request_id") == request_id, timeout)


StartOrchgate = Callable[..., Orchgate]  # the `start_orchgate` fixture: Orchgate's kwargs


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
