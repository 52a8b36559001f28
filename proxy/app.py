"""create_app(settings): the ASGI application.

Starlette serves orchgate's own routes (`/_orchgate/…`) and the lifespan; everything else is
handed to the pipeline as plain ASGI (the data path avoids Starlette's Request/Response).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy.audit.logging import operational_log
from proxy.audit.sinks import AuditLog
from proxy.catalog import airflow, prefect
from proxy.credentials import Credentials
from proxy.identity import TokenVerifier
from proxy.pipeline import Pipeline
from proxy.policy.reload import PolicyStore
from proxy.resolve import Resolver, SystemResolver
from proxy.resolve.airflow import AirflowResolver
from proxy.resolve.prefect import PrefectLookups, PrefectResolver
from proxy.settings import Settings
from proxy.upstream.forward import Upstream

HEALTH_PATHS = {"airflow": "/api/v2/monitor/health", "prefect": "/api/health"}
ADMIN_PREFIX = "/_orchgate/"


def create_app(settings: Settings) -> OrchgateApp:
    log = operational_log()
    policy = PolicyStore(settings.policy, log)  # an invalid policy stops start-up here
    upstreams = {u.name: Upstream(u, settings.limits) for u in settings.upstreams}
    credentials = Credentials(settings)
    resolvers: dict[str, SystemResolver] = {"airflow": AirflowResolver()}
    if "prefect" in upstreams and credentials.prefect is not None:
        resolvers["prefect"] = PrefectResolver(PrefectLookups(
            upstreams["prefect"], credentials.prefect.header, settings.lookup_cache_seconds))
    http = httpx2.AsyncClient(
        follow_redirects=False,
        trust_env=False,  # keys come straight from the issuer, never via an ambient proxy
        timeout=httpx2.Timeout(settings.limits.read_timeout_seconds,
                               connect=settings.limits.connect_timeout_seconds),
    )
    verifier = TokenVerifier(settings.issuers, http)
    audit = AuditLog(settings.audit)
    pipeline = Pipeline(settings, verifier, policy,
                        {"airflow": airflow.CATALOG, "prefect": prefect.CATALOG},
                        upstreams, credentials, Resolver(resolvers), audit)

    async def livez(_: Request) -> JSONResponse:
        return JSONResponse({"status": "live"})

    async def readyz(_: Request) -> JSONResponse:
        checks: dict[str, Any] = {"keys": {"ready": verifier.ready, **verifier.status()},
                                  "policy": {"ready": True, **policy.status()}}
        results = await asyncio.gather(*(u.healthy(HEALTH_PATHS[name])
                                         for name, u in upstreams.items()))
        for name, (ok, detail) in zip(upstreams, results, strict=True):
            checks[name] = {"ready": ok, "detail": detail}
        ready = all(c["ready"] for c in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                            status_code=200 if ready else 503)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        for upstream in upstreams.values():
            await upstream.start()
        await verifier.warm()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # SIGHUP: reload the policy (not available off the main thread, e.g. in tests).
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(policy.reload()))
        log.info("started", upstreams=sorted(upstreams), policy=policy.status(),
                 keys=verifier.status())
        try:
            yield
        finally:
            for upstream in upstreams.values():
                await upstream.close()
            await http.aclose()
            audit.close()

    shell = Starlette(routes=[Route(ADMIN_PREFIX + "livez", livez),
                              Route(ADMIN_PREFIX + "readyz", readyz)],
                      lifespan=lifespan)

    return OrchgateApp(shell, pipeline)


class OrchgateApp:
    """The ASGI entry point: orchgate's own routes to Starlette, the rest to the pipeline."""

    def __init__(self, shell: Starlette, pipeline: Pipeline) -> None:
        self.shell = shell
        self.pipeline = pipeline

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan" or scope["path"].startswith(ADMIN_PREFIX):
            await self.shell(scope, receive, send)
        elif kind == "http":
            await self.pipeline.http(scope, receive, send)
        elif kind == "websocket":
            await self.pipeline.websocket(scope, receive, send)
