"""Load generators: wrk at a fixed number of connections, and an open-loop constant rate.

wrk (closed loop) sends the next request on a connection when the previous answer arrived:
under load its latencies are mostly queueing and a slow server is offered less. The
constant-rate generator here sends on a schedule whatever the answers do (what wrk2 and vegeta
do; neither is packaged for Debian 12) and measures each latency from the time the request
was *due*, so a stall counts for every request it delayed (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

# wrk prints its own summary in text with 50/75/90/99 % only; this script adds p99.9 and
# the error counts, as one JSON line.
WRK_REPORT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


@dataclass(frozen=True, slots=True)
class Latencies:
    requests: int
    seconds: float
    errors: int  # connect/read/write errors and timeouts
    non_2xx: int
    p50_ms: float
    p99_ms: float
    p999_ms: float

    def checked(self, target: str) -> Latencies:
        """This run, if every request was answered with 2xx; otherwise the benchmark stops."""
        if self.errors or self.non_2xx:
            raise SystemExit(f"{target}: {self.errors} errors, "
                             f"{self.non_2xx} answers other than 2xx")
        return self

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk(url: str, token: str, connections: int, seconds: float) -> Latencies:
    """One wrk run (one thread: the second core stays with the servers). The token goes in
    the script (a file only its owner reads), not on wrk's command line, where any process
    can read it and a failure's message would print it."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_REPORT + f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    try:
        run = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(seconds, 1):g}s", "--timeout", "10s",
             "-s", script.name, url],
            capture_output=True, text=True, check=False, timeout=seconds + 30)
    finally:
        os.unlink(script.name)
    if run.returncode != 0:
        raise SystemExit(f"wrk {url} exited with {run.returncode}: {run.stderr.strip()}")
    out = run.stdout
    report = json.loads(next(line for line in reversed(out.splitlines())
                             if line.startswith("{")))
    return Latencies(
        requests=report["requests"], seconds=report["duration_us"] / 1e6,
        errors=report["errors"], non_2xx=report["non_2xx"],
        p50_ms=report["p50_us"] / 1000, p99_ms=report["p99_us"] / 1000,
        p999_ms=report["p999_us"] / 1000)


def percentile(samples: list[float], p: float) -> float:
    """Nearest rank (the value at or below which p % of the samples lie)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# -- constant rate -----------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLOCK_MONOTONIC = 1
TFD_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def periodic_timer(interval_ns: int) -> int:
    """A timerfd ticking every interval_ns. The event loop's own timers have millisecond
    resolution; at 2,000 requests/s the schedule needs 500 µs (timerfd_create(2))."""
    fd: int = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "timerfd_create")
    step = _Timespec(interval_ns // 1_000_000_000, interval_ns % 1_000_000_000)
    if _libc.timerfd_settime(fd, 0, ctypes.byref(_Itimerspec(step, step)), None) != 0:
        raise OSError(ctypes.get_errno(), "timerfd_settime")
    return fd


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time (no pipelining)."""

    def __init__(self, generator: _ConstantRate) -> None:
        self.generator = generator
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.WriteTransport | None = None
        self.due = self.sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.generator.lost(self)

    def send(self, due: int) -> None:
        assert self.transport is not None
        self.due, self.sent = due, time.monotonic_ns()
        self.transport.write(self.generator.request)

    # httptools callback
    def on_message_complete(self) -> None:
        self.generator.answered(self, self.parser.get_status_code())


class _ConstantRate:
    def __init__(self, request: bytes, rate: float, seconds: float,
                 timeline: list[tuple[float, float]] | None) -> None:
        self.request = request
        self.interval = round(1e9 / rate)
        self.total = round(rate * seconds)
        self.scheduled = 0
        self.start = 0
        self.idle: list[_Connection] = []
        self.waiting: deque[int] = deque()  # due times of requests no connection was free for
        self.latencies: list[float] = []  # ms from the due time to the last byte
        self.timeline = timeline  # (due time, time.monotonic() seconds; latency ms), if asked
        self.errors = self.non_2xx = 0
        self.finished = asyncio.get_running_loop().create_future()

    def tick(self, fd: int) -> None:
        try:
            os.read(fd, 8)  # the expiration count; the clock below says what is due
        except BlockingIOError:
            return
        due_now = min(self.total, (time.monotonic_ns() - self.start) // self.interval + 1)
        while self.scheduled < due_now:
            due = self.start + self.scheduled * self.interval
            self.scheduled += 1
            if self.idle:
                self.idle.pop().send(due)
            else:
                self.waiting.append(due)

    def answered(self, conn: _Connection, status: int) -> None:
        latency = (time.monotonic_ns() - conn.due) / 1e6
        self.latencies.append(latency)
        if self.timeline is not None:
            self.timeline.append((conn.due / 1e9, latency))
        if not 200 <= status < 300:
            self.non_2xx += 1
        self.release(conn)

    def release(self, conn: _Connection) -> None:
        if self.waiting:
            conn.send(self.waiting.popleft())
        else:
            self.idle.append(conn)
        self.check_done()

    def lost(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        elif conn.due:
            self.errors += 1
        self.check_done()

    def check_done(self) -> None:
        answered = len(self.latencies) + self.errors
        if answered >= self.total and not self.finished.done():
            self.finished.set_result(None)


async def _constant_rate(url: str, token: str, rate: float, seconds: float,
                         connections: int, timeline: list[tuple[float, float]] | None,
                         ) -> Latencies:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    generator = _ConstantRate(request, rate, seconds, timeline)
    opened = [await loop.create_connection(lambda: _Connection(generator), host, port)
              for _ in range(connections)]
    generator.idle = [conn for _, conn in opened]
    fd = periodic_timer(generator.interval)
    generator.start = time.monotonic_ns() + generator.interval
    loop.add_reader(fd, generator.tick, fd)
    began = time.monotonic()
    try:
        await asyncio.wait_for(generator.finished, seconds + 15)
    except TimeoutError:
        generator.errors += generator.total - len(generator.latencies) - generator.errors
    finally:
        loop.remove_reader(fd)
        os.close(fd)
        for transport, _ in opened:
            transport.close()
    lat = generator.latencies
    return Latencies(requests=len(lat), seconds=time.monotonic() - began,
                     errors=generator.errors, non_2xx=generator.non_2xx,
                     p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99),
                     p999_ms=percentile(lat, 99.9))


def constant_rate(url: str, token: str, rate: float, seconds: float,
                  connections: int = 64,
                  timeline: list[tuple[float, float]] | None = None) -> Latencies:
    """`rate` GET requests per second for `seconds`, over up to `connections` connections;
    a request due while every connection is busy waits, and its wait counts. `timeline`, if
    given, gets each answered request's due time (`time.monotonic()`) and latency (ms).

    The generator's own collector is off during the run: its collections of the growing
    result lists stalled the generator for milliseconds, and each stall counted as latency
    of every request due during it, whichever server was measured."""
    gc.collect()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_constant_rate(url, token, rate, seconds, connections, timeline))
    finally:
        gc.enable()
