"""create_app(settings): the ASGI application.

Starlette serves orchgate's own routes (`/_orchgate/…`) and the lifespan; everything else is
handed to the pipeline as plain ASGI (the data path avoids Starlette's Request/Response).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy import heap, metrics
from proxy.airflow.steps import AirflowSteps
from proxy.audit.logging import operational_log
from proxy.audit.sinks import AuditLog
from proxy.authorize import Authorizer
from proxy.catalog import airflow, prefect
from proxy.catalog.operation import Action
from proxy.credentials import AirflowServiceToken, AirflowTokens, Credentials
from proxy.credentials.airflow import Post
from proxy.errors import Reject
from proxy.identity import TokenVerifier
from proxy.lineage import Lineage
from proxy.ownership import OwnerTags
from proxy.pipeline import Pipeline
from proxy.policy.reload import PolicyStore
from proxy.prefect.steps import PrefectSteps
from proxy.resolve import Resolver, SystemResolver
from proxy.resolve.airflow import AirflowLookups, AirflowResolver
from proxy.resolve.prefect import PrefectLookups, PrefectResolver
from proxy.settings import Settings
from proxy.upstream.forward import Upstream

HEALTH_PATHS = {"airflow": "/api/v2/monitor/health", "prefect": "/api/health"}
ADMIN_PREFIX = "/_orchgate/"
INTERNAL_CALLER = "orchgate"  # the name orchgate's own lookups carry upstream
# After uvicorn's drain (timeout_graceful_shutdown) it cancels what is left; their audit
# records are written as they unwind, before the trail is closed.
UNWIND_SECONDS = 5.0


def create_app(settings: Settings) -> OrchgateApp:
    log = operational_log()
    # An invalid policy stops start-up here; later, an invalid change keeps the old one.
    policy = PolicyStore(settings.policy.model, settings.policy.files, log)
    shadow = PolicyStore(settings.policy.model, settings.policy.shadow_files, log,
                         name="shadow") if settings.policy.shadow_files else None
    upstreams = {u.name: Upstream(u, settings.limits, settings.retries,
                                  settings.circuit_breaker) for u in settings.upstreams}
    credentials = Credentials(settings, airflow_post=_poster(upstreams.get("airflow")))
    resolvers: dict[str, SystemResolver] = {}
    airflow_lookups = None
    if "airflow" in upstreams and credentials.airflow is not None:
        # Lookups only GET what a viewer may read: the least role Airflow's checks allow.
        lookup_tokens = credentials.airflow
        airflow_lookups = AirflowLookups(
            upstreams["airflow"],
            lambda: lookup_tokens.header(INTERNAL_CALLER, Action.READ),
            settings.lookup_cache_seconds)
        resolvers["airflow"] = AirflowResolver(airflow_lookups)
    prefect_resolver = None
    if "prefect" in upstreams and credentials.prefect is not None:
        resolvers["prefect"] = prefect_resolver = PrefectResolver(PrefectLookups(
            upstreams["prefect"], credentials.prefect.header, settings.lookup_cache_seconds))
    http = httpx2.AsyncClient(
        follow_redirects=False,
        trust_env=False,  # keys come straight from the issuer, never via an ambient proxy
        timeout=httpx2.Timeout(settings.limits.read_timeout_seconds,
                               connect=settings.limits.connect_timeout_seconds),
    )
    verifier = TokenVerifier(settings.issuers, http)
    audit = AuditLog(settings.audit)
    tag_auth: dict[str, Callable[[], bytes]] = {}
    if credentials.airflow is not None:
        airflow_tokens = credentials.airflow
        tag_auth["airflow"] = lambda: airflow_tokens.header(INTERNAL_CALLER, Action.READ)
    if credentials.prefect is not None:
        tag_auth["prefect"] = credentials.prefect.header
    tags = OwnerTags(settings.policy.owner_tags, upstreams, tag_auth,
                     settings.lookup_cache_seconds) if settings.policy.owner_tags else None
    authorizer = Authorizer(policy, shadow, tags)
    prefect_steps = PrefectSteps(prefect_resolver, authorizer) if prefect_resolver else None
    airflow_steps = AirflowSteps(airflow_lookups, authorizer) if airflow_lookups else None
    pipeline = Pipeline(settings, verifier, authorizer,
                        {"airflow": airflow.CATALOG, "prefect": prefect.CATALOG},
                        upstreams, credentials, Resolver(resolvers), audit, prefect_steps,
                        airflow_steps,
                        Lineage(authorizer, airflow_lookups,
                                prefect_resolver.lookups if prefect_resolver else None))

    async def livez(_: Request) -> JSONResponse:
        return JSONResponse({"status": "live"})

    async def readyz(_: Request) -> JSONResponse:
        checks: dict[str, Any] = {"keys": {"ready": verifier.ready, **verifier.status()},
                                  "policy": {"ready": True, **policy.status()},
                                  "audit": audit.status()}
        if shadow is not None:
            checks["shadow_policy"] = {"ready": True, **shadow.status(),
                                       "disagreements": authorizer.shadow_disagreements}
        if isinstance(credentials.airflow, AirflowServiceToken):
            checks["airflow_credential"] = {"ready": credentials.airflow.ready,
                                            "last_error": credentials.airflow.last_error}
        results = await asyncio.gather(*(u.healthy(HEALTH_PATHS[name])
                                         for name, u in upstreams.items()))
        for name, (ok, detail) in zip(upstreams, results, strict=True):
            circuit = upstreams[name].breaker.status()
            checks[name] = {"ready": ok and circuit["state"] != "open", "detail": detail,
                            "circuit": circuit}
        ready = all(c["ready"] for c in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                            status_code=200 if ready else 503)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        for upstream in upstreams.values():
            await upstream.start()
        await verifier.warm()
        loop = asyncio.get_running_loop()
        stores = [s for s in (policy, shadow) if s is not None]

        def reload_all() -> None:
            for store in stores:
                tasks.add(loop.create_task(store.reload()))
        tasks: set[asyncio.Task[Any]] = set()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # SIGHUP: reload the policy (not available off the main thread, e.g. in tests).
            loop.add_signal_handler(signal.SIGHUP, reload_all)
        if settings.policy.watch:
            tasks.update(loop.create_task(store.watch()) for store in stores)
        if isinstance(credentials.airflow, AirflowServiceToken):
            # The first exchange before serving (a failure is reported by readyz and retried).
            with contextlib.suppress(RuntimeError, OSError, ValueError, Reject):
                await credentials.airflow.refresh()
            tasks.add(loop.create_task(credentials.airflow.keep_fresh()))
        # With --workers N the parent process serves the metrics (cli.py).
        exporter = (metrics.start_server(settings.metrics)
                    if settings.metrics is not None and metrics.multiprocess_dir() is None
                    else None)
        app.metrics_port = exporter.port if exporter is not None else None
        log.info("started", upstreams=sorted(upstreams), policy=policy.status(),
                 keys=verifier.status(), metrics_port=app.metrics_port)
        heap.settle()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            deadline = loop.time() + UNWIND_SECONDS
            # A counter polled here costs the request path less than an Event set per request.
            while pipeline.in_flight and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            for upstream in upstreams.values():
                await upstream.close()
            await http.aclose()
            audit.close()  # the syncer's last group commit, then fsync and close
            if exporter is not None:
                exporter.stop()
            metrics.worker_exited()

    async def airflow_jwks(_: Request) -> JSONResponse:
        # The public keys Airflow's `[api_auth] trusted_jwks_url` points at (jwt-rs256 mode).
        jwks = credentials.airflow.jwks() if isinstance(credentials.airflow, AirflowTokens) \
            else None
        if jwks is None:
            return JSONResponse({"detail": "the Airflow credential mode is not jwt-rs256"},
                                status_code=404)
        return JSONResponse(jwks, headers={"cache-control": "max-age=60"})

    shell = Starlette(routes=[Route(ADMIN_PREFIX + "livez", livez),
                              Route(ADMIN_PREFIX + "readyz", readyz),
                              Route(ADMIN_PREFIX + "airflow/jwks.json", airflow_jwks)],
                      lifespan=lifespan)
    app = OrchgateApp(shell, pipeline)
    return app


class OrchgateApp:
    """The ASGI entry point: orchgate's own routes to Starlette, the rest to the pipeline."""

    def __init__(self, shell: Starlette, pipeline: Pipeline) -> None:
        self.shell = shell
        self.pipeline = pipeline
        self.metrics_port: int | None = None  # bound by the lifespan (`metrics.port` may be 0)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan" or scope["path"].startswith(ADMIN_PREFIX):
            await self.shell(scope, receive, send)
        elif kind == "http":
            await self.pipeline.http(scope, receive, send)
        elif kind == "websocket":
            await self.pipeline.websocket(scope, receive, send)


def _poster(upstream: Upstream | None) -> Post | None:
    """POST a JSON body to `upstream` (the password credential's token exchange)."""
    if upstream is None:
        return None
    target = upstream

    async def post(path: bytes, body: bytes) -> tuple[int, Any]:
        return await target.get_json(path, [], "POST", body)
    return post
