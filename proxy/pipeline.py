"""The request path, top to bottom (DESIGN.md §1).

    1 edge        canonical path, size limit
    2 route       prefix → upstream; (method, path) → Operation
    3 authn       bearer token → Principal                               401
    4 resolve     Operation + request → workflow ids (+ the action the body asks for)
    5 authz       decide(principal, system, workflow, action) → Decision  403
    6 audit       lineage checked; run/deploy/admin: intent record on disk  503
    7 credential  the upstream credential for this caller and action
    8 forward     stream request and response; filter many-workflow lists
    9 audit       one record per request, whatever happened

Each step reads what earlier steps put in the `RequestContext` and adds to it; none reaches
back. Any step may raise `Reject`, which becomes a problem+json answer (and is audited).
Proxied requests are handled as plain ASGI: Starlette's Request/Response cost ~30 % here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy import metrics
from proxy.airflow.redaction import forward_redacted
from proxy.airflow.steps import AirflowSteps
from proxy.audit.record import record
from proxy.audit.sinks import AuditLog
from proxy.audit.writeahead import write_ahead
from proxy.authorize import Authorizer
from proxy.body import (
    check_json_content_type,
    content_length,
    parse_json,
    read_body,
    stream_body,
    too_large,
)
from proxy.catalog.operation import Catalog, Operation, Scope
from proxy.context import RequestContext, request_id
from proxy.credentials import Credentials
from proxy.edge import (
    canonical_path,
    check_request_headers,
    forwarded_for,
    is_trusted,
    upstream_request_headers,
)
from proxy.errors import Reject, bad_request, problem_body, problem_headers
from proxy.identity import AuthError, KeysUnavailable, Principal, TokenVerifier, bearer_token
from proxy.lineage import Lineage
from proxy.listing import ItemWorkflows, filter_list
from proxy.prefect.steps import PrefectSteps
from proxy.resolve import Resolver
from proxy.settings import Settings
from proxy.upstream import websocket
from proxy.upstream.forward import Headers, Upstream
from proxy.upstream.relay import forward

FIRST_MESSAGE_SECONDS = 10.0
Scope_ = dict[str, Any]
Receive = Any
Send = Any


class Pipeline:
    def __init__(self, settings: Settings, verifier: TokenVerifier, authorizer: Authorizer,
                 catalogs: dict[str, Catalog], upstreams: dict[str, Upstream],
                 credentials: Credentials, resolver: Resolver, audit: AuditLog,
                 prefect: PrefectSteps | None = None,
                 airflow: AirflowSteps | None = None, lineage: Lineage | None = None
                 ) -> None:
        self.settings = settings
        self.verifier = verifier
        self.authorizer = authorizer
        self.catalogs = catalogs
        self.upstreams = upstreams
        self.credentials = credentials
        self.resolver = resolver
        self.audit = audit
        self.prefect = prefect  # Prefect's scoped reads, run stamps, socket frame filters
        self.airflow = airflow  # Airflow's many-DAG requests, run notes, secret values
        self.lineage = lineage  # X-Orchgate-Parent-Run from service accounts (lineage.py)
        self._prefixes = sorted(((u.prefix, u) for u in settings.upstreams),
                                key=lambda pu: -len(pu[0]))
        self.in_flight = 0  # requests and sockets between their first and last message
        self.sockets = 0  # of which sockets

    # -- HTTP ------------------------------------------------------------------------------

    async def http(self, scope: Scope_, receive: Receive, send: Send) -> None:
        ctx = new_context(scope)
        audited = False

        async def send_audited(message: dict[str, Any]) -> None:
            # 9 audit: the time of the answer is noted before its last message; within 5 ms
            # its record is built from the context, sealed and written in one write(2) with
            # the other records waiting (audit/sinks.py).
            nonlocal audited
            if (not audited and message["type"] == "http.response.body"
                    and not message.get("more_body", False)):
                audited = True
                if self.audit.enabled:  # with the trail off, no record is built at all
                    ctx.answer()
                    self.audit.write_later(record, ctx)
            await send(message)

        self.in_flight += 1
        try:
            await self._http(ctx, scope, receive, send_audited)
        except Reject as reject:
            await self._reject(ctx, reject, send_audited)
        finally:
            if not audited and self.audit.enabled:  # a cut stream, a caller gone: recorded
                self.audit.write(record(ctx))
            metrics.observe_request(ctx)
            self.in_flight -= 1
            if self.in_flight == self.sockets and self.audit.enabled:
                # No other request under way: the records waiting are built and sealed in
                # the loop's next turn, after this answer's bytes went out (server.py) and
                # with nobody waiting behind them; their write still waits (audit/sinks.py).
                asyncio.get_running_loop().call_soon(self.audit.seal_waiting)

    async def _http(self, ctx: RequestContext, scope: Scope_, receive: Receive,
                    send: Send) -> None:
        headers: Headers = scope["headers"]
        # 1 edge
        ctx.path = canonical_path(scope.get("raw_path") or scope["path"].encode())
        check_request_headers(headers, self.settings.limits.max_header_bytes)
        declared = content_length(headers)
        if declared is not None and declared > self.settings.limits.max_body_bytes:
            raise too_large(self.settings.limits.max_body_bytes)
        # 2 route
        upstream, catalog = self.route(ctx)
        # 3 authn (before the catalog: unauthenticated callers learn nothing about it)
        ctx.principal = await self.authenticate(headers)
        operation, ctx.params = find_operation(catalog, ctx.method, ctx.api_path)
        ctx.operation = operation
        if operation.blocked:
            raise blocked(operation.blocked)
        if operation.needs_body:
            check_json_content_type(headers)
            ctx.body = await read_body(receive, self.settings.limits.max_body_bytes,
                                       self.settings.limits.body_timeout_seconds)
            ctx.json = parse_json(ctx.body)
        # 4 resolve
        ctx.workflows, ctx.action = await self.resolver.resolve(operation, ctx.params, ctx.json)
        if operation.many == "match" and self.airflow is not None:
            await self.airflow.match(ctx)  # PATCH /dags: every DAG its filters match
        # 5 authz
        await self.authorizer.authorize(ctx, ctx.principal, operation)
        # 6 audit intent
        if self.lineage is not None:
            await self.lineage.check(ctx, headers)
        await write_ahead(self.audit, ctx)
        # 7 credential
        out_headers = self.upstream_headers(ctx, scope, headers)
        out_headers.append(self.credentials.header(upstream.name, ctx.principal, ctx.action))
        # 8 forward
        if (operation.many == "narrow" and self.airflow is not None
                and not await self.airflow.narrow(ctx, send)):  # dag_ids ∩ what it may read
            return  # nothing readable: answered with the empty collection
        path_qs = upstream_path(ctx, scope)
        if listing_of(operation, ctx.params):
            if self.prefect is not None and operation.system == "prefect":
                # The caller's scope is injected into Prefect's filter (prefect/scoped.py).
                await self.prefect.scoped.forward(ctx, upstream, path_qs, out_headers, send)
                return
            async def item_workflow(item: Any) -> ItemWorkflows:
                return await self.resolver.item_workflow(operation, item)
            await filter_list(ctx, upstream, operation, path_qs, out_headers, item_workflow,
                              self.authorizer.can_read(ctx), send)
            return
        body: bytes | AsyncIterator[bytes] | None = ctx.body
        if self.prefect is not None and operation.system == "prefect":
            body = self.prefect.stamp(ctx, ctx.body)  # created runs name their caller
        if operation.stamp and self.airflow is not None:
            body = self.airflow.stamp(ctx)  # the run's note names its caller
        if operation.redact and self.airflow is not None and self.airflow.hides_secrets(ctx):
            await forward_redacted(ctx, upstream, operation.redact, path_qs, out_headers,
                                   ctx.body, send)
            return
        if body is None and ctx.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            body = stream_body(ctx, receive, self.settings.limits.max_body_bytes,
                               self.settings.limits.body_timeout_seconds)
        await forward(ctx, upstream, path_qs, out_headers, body, send)

    # -- websockets (Prefect) ------------------------------------------------------------------

    async def websocket(self, scope: Scope_, receive: Receive, send: Send) -> None:
        ctx = new_context(scope)
        self.in_flight += 1
        self.sockets += 1
        try:
            await self._websocket(ctx, scope, receive, send)
        except Reject as reject:
            # Refused before accept, the caller sees the upgrade answered with HTTP 403.
            ctx.status = reject.status if ctx.response_started else 403
            ctx.problem = reject.slug
            # Before accept, a close makes the server answer the upgrade with HTTP 403; after,
            # it closes the socket with a reason the client can log. A caller already gone
            # cannot be told.
            with contextlib.suppress(OSError, RuntimeError):
                await send({"type": "websocket.close", "code": websocket.POLICY_VIOLATION,
                            "reason": f"{reject.title}: {reject.detail}"[:120]})
        finally:
            if self.audit.enabled:
                self.audit.write(record(ctx))
            metrics.observe_request(ctx)
            self.sockets -= 1
            self.in_flight -= 1

    async def _websocket(self, ctx: RequestContext, scope: Scope_, receive: Receive,
                         send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        headers: Headers = scope["headers"]
        # 1 edge, 2 route
        ctx.path = canonical_path(scope.get("raw_path") or scope["path"].encode())
        check_request_headers(headers, self.settings.limits.max_header_bytes)
        upstream, catalog = self.route(ctx)
        if "prefect" not in scope.get("subprotocols", ()):
            raise bad_request("the prefect websocket subprotocol is required")
        # 3 authn: on the upgrade when it carries a token, else on the first message
        on_upgrade = any(k == b"authorization" for k, _ in headers)
        principal = await self.authenticate(headers) if on_upgrade else None
        operation, ctx.params = find_operation(catalog, "WEBSOCKET", ctx.api_path)
        ctx.operation = operation
        await send({"type": "websocket.accept", "subprotocol": "prefect"})
        ctx.response_started = True
        first = await first_message(receive)
        if principal is None:
            principal = await self.authenticate(
                [(b"authorization", b"Bearer " + str(first.get("token") or "").encode())])
        ctx.principal = principal
        # 4 resolve, 5 authz
        ctx.workflows, ctx.action = await self.resolver.resolve(operation, ctx.params, None)
        await self.authorizer.authorize(ctx, principal, operation)
        # 6 audit intent (a socket that writes: events in)
        await write_ahead(self.audit, ctx)
        # 7 credential, 8 forward
        assert self.credentials.prefect is not None
        # The handshake fields (key, version, protocol, extensions) belong to each hop: aiohttp
        # negotiates its own with the upstream.
        out_headers = [(k, v) for k, v in self.upstream_headers(ctx, scope, headers)
                       if not k.startswith(b"sec-websocket-")]
        out_headers.append(self.credentials.header(upstream.name, principal, ctx.action))
        ws, answer = await websocket.connect(upstream, upstream_path(ctx, scope), out_headers,
                                             self.credentials.prefect.auth_string())
        ctx.upstream_status = 101
        await send({"type": "websocket.send", "text": answer})
        inbound, outbound = self.prefect.frame_filters(ctx) if self.prefect else (None, None)
        result = await websocket.bridge(ws, receive, send, principal.expires_at,
                                        inbound=inbound, outbound=outbound)
        ctx.status = result.close_code
        ctx.notes["websocket"] = {"frames_in": result.frames_in,
                                  "frames_out": result.frames_out,
                                  "dropped_in": result.dropped_in,
                                  "dropped_out": result.dropped_out,
                                  "closed_by": result.closed_by}

    def route(self, ctx: RequestContext) -> tuple[Upstream, Catalog]:
        for prefix, settings in self._prefixes:
            if ctx.path == prefix or ctx.path.startswith(prefix + "/"):
                ctx.upstream = settings
                rest = ctx.path[len(prefix):]
                if not rest.startswith(settings.api_root + "/"):
                    reason = self.catalogs[settings.name].blocked_reason(rest)
                    if reason is not None:
                        raise blocked(reason)
                    raise Reject(404, "not-found", "Not found",
                                 f"only the {settings.name} API under "
                                 f"{prefix}{settings.api_root}/ is served")
                ctx.api_path = rest[len(settings.api_root):]
                return self.upstreams[settings.name], self.catalogs[settings.name]
        raise Reject(404, "not-found", "Not found",
                     "no upstream is served under this path (known: "
                     + ", ".join(p for p, _ in self._prefixes) + ")")

    async def authenticate(self, headers: Headers) -> Principal:
        try:
            token = bearer_token([v for k, v in headers if k == b"authorization"])
            return self.verifier.cached(token) or await self.verifier.verify(token)
        except AuthError as err:
            raise unauthorized(err) from None
        except KeysUnavailable:
            # Our outage (the IdP's keys are unknown or too stale), not the caller's fault.
            raise Reject(503, "keys-unavailable", "Signing keys unavailable",
                         "the identity provider's keys could not be loaded; try again later",
                         headers=((b"retry-after", b"5"),)) from None

    def upstream_headers(self, ctx: RequestContext, scope: Scope_, headers: Headers) -> Headers:
        # One request id, orchgate's, from the audit record to the upstream's logs: a caller's
        # own X-Request-ID would reach the upstream beside it and win in its logs.
        out = [(k, v) for k, v in upstream_request_headers(headers) if k != b"x-request-id"]
        trusted = is_trusted(ctx.client, self.settings.trusted_proxies)
        host = next((v for k, v in headers if k == b"host"), b"")
        out += [
            (b"x-forwarded-for", forwarded_for(headers, ctx.client, trusted).encode()),
            (b"x-forwarded-proto", scope.get("scheme", "http").encode()),
            (b"x-forwarded-host", host),
            (b"x-request-id", ctx.request_id.encode()),
        ]
        return out

    async def _reject(self, ctx: RequestContext, reject: Reject, send: Send) -> None:
        ctx.status = reject.status
        ctx.problem = reject.slug
        if ctx.response_started:
            return  # too late for an answer: the stream is cut (see forward)
        body = problem_body(reject.status, reject.slug, reject.title, reject.detail,
                            ctx.request_id)
        await send({"type": "http.response.start", "status": reject.status,
                    "headers": problem_headers(body, ctx.request_id, reject.headers)})
        await send({"type": "http.response.body", "body": body})
        ctx.bytes_out = len(body)


# -- steps as small functions --------------------------------------------------------------


def new_context(scope: Scope_) -> RequestContext:
    headers: Headers = scope["headers"]
    client = scope.get("client")
    return RequestContext(
        request_id=request_id(),
        method=scope.get("method", "WEBSOCKET"),
        path=scope["path"],
        query=scope.get("query_string", b""),
        client=client[0] if client else "",
        user_agent=next((v.decode("latin-1") for k, v in headers if k == b"user-agent"), ""),
    )


async def first_message(receive: Receive) -> dict[str, Any]:
    """The `prefect` subprotocol's first message: `{"type": "auth", "token": …}`."""
    try:
        async with asyncio.timeout(FIRST_MESSAGE_SECONDS):
            message = await receive()
    except TimeoutError:
        raise unauthorized(AuthError("invalid_request", "no auth message in time")) from None
    if message["type"] != "websocket.receive":
        raise Reject(400, "client-disconnected", "Client disconnected", "the socket closed")
    try:
        data = orjson.loads(message.get("text") or message.get("bytes") or b"")
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or data.get("type") != "auth":
        raise unauthorized(AuthError("invalid_request", "the first message must be an auth "
                                                        "message"))
    return data


def find_operation(catalog: Catalog, method: str, api_path: str
                   ) -> tuple[Operation, dict[str, str]]:
    found = catalog.find(method, api_path)
    if found is None:
        raise Reject(403, "operation-not-in-catalog", "Operation not in catalog",
                     f"{method} {api_path} is not an operation orchgate knows for "
                     f"{catalog.system}; unknown operations are denied")
    return found


def listing_of(op: Operation, params: dict[str, str]) -> bool:
    if op.many:  # narrowed before it is sent, or decided on every DAG it matches
        return False
    return op.scope == Scope.LIST or (bool(op.list_key) and params.get(op.param) == "~")


def upstream_path(ctx: RequestContext, scope: Scope_) -> bytes:
    assert ctx.upstream is not None
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    prefix = ctx.upstream.prefix.encode()
    if not raw.startswith(prefix + b"/"):
        # Routed on the decoded path, a percent-encoded prefix (`/%61irflow/…`) cannot be cut
        # from the raw one: refused, like every path with two spellings of one meaning.
        raise Reject(400, "ambiguous-path", "Ambiguous path",
                     "the upstream prefix must not be percent-encoded")
    path = raw[len(prefix):]
    return path + (b"?" + ctx.query if ctx.query else b"")


def unauthorized(err: AuthError) -> Reject:
    return Reject(err.status_code, "unauthorized" if err.status_code == 401 else "bad-request",
                  "Unauthorized" if err.status_code == 401 else "Bad request", err.description,
                  headers=((b"www-authenticate", err.challenge().encode()),))


def blocked(reason: str) -> Reject:
    return Reject(403, "blocked", "Not served through orchgate", reason)
