"""A Prefect event stream over a websocket: frames relayed per second, and round-trip latency.

The client speaks the `prefect` subprotocol (auth message first), then sends events as a
flow run does on `/api/events/in`; the upstream (benchmarks/prefect_upstream.py) echoes each.
Through orchgate every event is parsed, its flow run resolved to a workflow (cached after the
first lookup) and decided before it is relayed. Latency: one frame in flight, round trip.
Throughput: a window of frames in flight, round trips per second.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import aiohttp
import uvloop

from benchmarks.load import percentile
from benchmarks.prefect_upstream import DEPLOYMENT, FLOW_RUN

EVENT = json.dumps({
    "type": "event",
    "event": "prefect.flow-run.Running",
    "occurred": "2026-11-24T10:00:00.000000Z",
    "id": "5d8e2f1a-7c3b-4e9d-8a6f-1b2c3d4e5f60",
    "follows": None,
    "resource": {"prefect.resource.id": f"prefect.flow-run.{FLOW_RUN}",
                 "prefect.resource.name": "bench-run", "prefect.state-name": "Running",
                 "prefect.state-type": "RUNNING"},
    "related": [{"prefect.resource.id": f"prefect.deployment.{DEPLOYMENT}",
                 "prefect.resource.role": "deployment",
                 "prefect.resource.name": "nightly"}],
    "payload": {"intended": {"from": "PENDING", "to": "RUNNING"},
                "initial_state": {"type": "PENDING", "name": "Pending"},
                "validated_state": {"type": "RUNNING", "name": "Running"}},
})


@dataclass(frozen=True, slots=True)
class RelayResult:
    frames_per_second: float  # round trips per second, `window` frames in flight
    frames: int
    p50_ms: float  # round trip, one frame in flight
    p99_ms: float
    p999_ms: float


async def _relay(url: str, token: str, round_trips: int, seconds: float,
                 window: int) -> RelayResult:
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(url, protocols=("prefect",)) as ws:
        await ws.send_str(json.dumps({"type": "auth", "token": token}))
        answer = await ws.receive(timeout=10)
        if answer.type != aiohttp.WSMsgType.TEXT or "auth_success" not in answer.data:
            raise RuntimeError(f"{url}: the socket was not accepted: {answer!r}")
        samples = []
        for _ in range(round_trips):
            began = time.perf_counter()
            await ws.send_str(EVENT)
            echo = await ws.receive(timeout=10)
            samples.append((time.perf_counter() - began) * 1000)
            if echo.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"{url}: the echo did not come back: {echo!r}")
        # Keep `window` frames in flight: every echo that arrives before the deadline sends one.
        began = time.monotonic()
        deadline = began + seconds
        for _ in range(window):
            await ws.send_str(EVENT)
        sent, received = window, 0
        while received < sent:
            message = await ws.receive(timeout=10)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"{url}: the stream ended: {message!r}")
            received += 1
            if time.monotonic() < deadline:
                await ws.send_str(EVENT)
                sent += 1
        elapsed = time.monotonic() - began
    return RelayResult(frames_per_second=received / elapsed, frames=received,
                       p50_ms=percentile(samples, 50), p99_ms=percentile(samples, 99),
                       p999_ms=percentile(samples, 99.9))


def relay(url: str, token: str, round_trips: int = 2000, seconds: float = 3,
          window: int = 64) -> RelayResult:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_relay(url, token, round_trips, seconds, window))
