"""Prometheus metrics, served on their own port (settings `metrics: {host, port}`).

Label values come from small fixed sets only (system, action, decision, status, issuer, policy
name): never a workflow id, a path or a caller, which would grow a series per value.

With `orchgate serve --workers N` the workers write their samples to files in
`PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode, set by the command before
any worker starts) and the parent process serves `/metrics` from them; with one worker, or in
tests, the app serves its own registry from its lifespan (`start_server`).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.settings import MetricsSettings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Proxy latencies span a 1 ms authorization refusal to a long NDJSON stream.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
DISK_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0)

REQUESTS = Counter("orchgate_requests", "Requests answered (HTTP) or closed (websockets)",
                   ("system", "action", "decision", "status"))
REQUEST_SECONDS = Histogram("orchgate_request_duration_seconds",
                            "Whole request through the proxy, first byte in to last byte out",
                            ("system", "action"), buckets=LATENCY_BUCKETS)
UPSTREAM_SECONDS = Histogram("orchgate_upstream_response_seconds",
                             "Upstream time to response headers, per attempt",
                             ("system",), buckets=LATENCY_BUCKETS)
UPSTREAM_FAILURES = Counter("orchgate_upstream_failures",
                            "Upstream attempts without a response (connect error, timeout)",
                            ("system", "kind"))
UPSTREAM_RETRIES = Counter("orchgate_upstream_retries",
                           "Idempotent upstream calls sent again", ("system", "reason"))
RETRY_BUDGET_EXHAUSTED = Counter("orchgate_upstream_retry_budget_exhausted",
                                 "Retries not sent because the retry budget was spent",
                                 ("system",))
BREAKER_STATE = Gauge("orchgate_upstream_circuit_state",
                      "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open",
                      ("system",), multiprocess_mode="livemax")
BREAKER_REJECTIONS = Counter("orchgate_upstream_circuit_rejections",
                             "Requests answered 503 by an open circuit, never sent upstream",
                             ("system",))
JWKS_REFRESHES = Counter("orchgate_jwks_refreshes", "JWKS fetches from an issuer",
                         ("issuer",))
JWKS_FAILURES = Counter("orchgate_jwks_refresh_failures", "JWKS fetches that failed",
                        ("issuer",))
POLICY_GENERATION = Gauge("orchgate_policy_generation", "Generation of the policy in force",
                          ("policy",), multiprocess_mode="livemax")
POLICY_RELOADS = Counter("orchgate_policy_reloads", "Policy reloads that swapped a new snapshot",
                         ("policy",))
POLICY_RELOAD_FAILURES = Counter("orchgate_policy_reload_failures",
                                 "Policy reloads refused (invalid files; the old one kept)",
                                 ("policy",))
AUDIT_WRITE_SECONDS = Histogram("orchgate_audit_write_seconds",
                                "Audit trail writes: append (write(2)) and fsync (group commit)",
                                ("op",), buckets=DISK_BUCKETS)
AUDIT_WRITE_FAILURES = Counter("orchgate_audit_write_failures",
                               "Audit records or fsyncs that failed", ("op",))
CREDENTIAL_MINTS = Counter("orchgate_credential_mints",
                           "Upstream credentials minted or exchanged", ("system", "mode"))

_children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}


def observe_request(ctx: RequestContext) -> None:
    """The one call per request (pipeline.py): its count and its latency."""
    action = ctx.action.label if ctx.action is not None else "none"
    decision = ("none" if ctx.decision is None
                else "allow" if ctx.decision.allowed else "deny")
    key = (ctx.system or "none", action, decision, ctx.status or 0)
    children = _children.get(key)
    if children is None:  # prometheus' labels() takes a lock and builds a tuple: cache it
        children = (REQUESTS.labels(key[0], action, decision, str(key[3])),
                    REQUEST_SECONDS.labels(key[0], action))
        _children[key] = children
    children[0].inc()
    children[1].observe(time.perf_counter() - ctx.started)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def start_server(settings: MetricsSettings, registry: CollectorRegistry = REGISTRY
                 ) -> MetricsServer:
    server, thread = start_http_server(settings.port, settings.host, registry)
    return MetricsServer(server, thread)


def multiprocess_registry() -> CollectorRegistry:
    """What the parent of `--workers N` serves: every worker's samples, summed."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def worker_exited() -> None:
    """A worker stops: its live gauges leave the parent's exposition."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class MetricsServer:
    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
