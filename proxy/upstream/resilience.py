"""Retries with a budget, and a circuit breaker, per upstream (used by forward.py).

Retries: an idempotent call (GET, HEAD, a catalog read sent as POST — `Operation.idempotent`)
whose body is buffered or absent is sent again after a connection error, a timeout before the
response headers, or a 502/503, with exponential backoff and full jitter (AWS Architecture
Blog, "Exponential Backoff and Jitter"). Never a mutating call, a streamed body, or a response
already handed to the caller. A budget bounds the extra load on an upstream that is already
struggling: retries stay below `budget_ratio` of the requests of the last 10 seconds, plus a
few a window so a quiet upstream is still retried (Finagle's RetryBudget, Envoy's retry
budgets).

Circuit breaker: after `failures` consecutive attempts without a response (connect error,
timeout), the circuit opens and requests are answered 503 at once, never sent, for
`cooldown_seconds`; then one probe goes through (half-open): an answer closes the circuit,
another failure opens it for a new cool-down.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable

from proxy import metrics
from proxy.errors import Reject
from proxy.settings import BreakerSettings, RetrySettings

BUDGET_WINDOW_SECONDS = 10.0
RETRY_STATUSES = frozenset({502, 503})


class RetryBudget:
    """At most `ratio` × requests (+ `minimum`) retries over a sliding window of two halves."""

    def __init__(self, ratio: float, minimum: int = 3, window: float = BUDGET_WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self._half = window / 2
        self._clock = clock
        self._started = clock()
        self._requests = [0, 0]  # [previous half, current half]
        self._retries = [0, 0]

    def _rotate(self) -> None:
        halves = int((self._clock() - self._started) // self._half)
        if halves == 0:
            return
        if halves == 1:
            self._requests = [self._requests[1], 0]
            self._retries = [self._retries[1], 0]
        else:
            self._requests, self._retries = [0, 0], [0, 0]
        self._started += halves * self._half

    def request(self) -> None:
        self._rotate()
        self._requests[1] += 1

    def spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        self._rotate()
        if sum(self._retries) >= self.minimum + self.ratio * sum(self._requests):
            return False
        self._retries[1] += 1
        return True


class Retries:
    def __init__(self, system: str, settings: RetrySettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.system = system
        self.settings = settings
        self.budget = RetryBudget(settings.budget_ratio, clock=clock)

    def may_retry(self, attempt: int, reason: str) -> bool:
        """Whether attempt number `attempt` (0: the first) may be followed by another."""
        if attempt >= self.settings.attempts:
            return False
        if not self.budget.spend():
            metrics.RETRY_BUDGET_EXHAUSTED.labels(self.system).inc()
            return False
        metrics.UPSTREAM_RETRIES.labels(self.system, reason).inc()
        return True

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1: the first): full jitter, bounded."""
        ceiling = min(self.settings.max_backoff_seconds,
                      self.settings.backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


class State(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, system: str, settings: BreakerSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.system = system
        self.settings = settings
        self._clock = clock
        self.state = State.CLOSED
        self.failures = 0  # consecutive attempts without a response
        self.opened_at = 0.0
        self._probing = False
        self._gauge = metrics.BREAKER_STATE.labels(system)
        self._gauge.set(0)

    def admit(self) -> bool:
        """Before an attempt: True if it is the half-open probe; Reject(503) while open."""
        if self.state == State.CLOSED:
            return False
        if self.state == State.OPEN and self._clock() - self.opened_at >= \
                self.settings.cooldown_seconds:
            self._set(State.HALF_OPEN)
        if self.state == State.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        metrics.BREAKER_REJECTIONS.labels(self.system).inc()
        retry_after = max(1, math.ceil(self.settings.cooldown_seconds
                                       - (self._clock() - self.opened_at)))
        raise Reject(503, "upstream-unavailable", "Upstream unavailable",
                     f"{self.system} is not answering; orchgate stopped sending it requests "
                     "for a while",
                     headers=((b"retry-after", str(retry_after).encode()),))

    def succeeded(self, probe: bool) -> None:
        """The upstream answered (whatever the status)."""
        self.failures = 0
        if probe:
            self._probing = False
        if self.state != State.CLOSED:
            self._set(State.CLOSED)

    def failed(self, probe: bool) -> None:
        self.failures += 1
        if probe:
            self._probing = False
        if probe or (self.state == State.CLOSED and self.failures >= self.settings.failures):
            self.opened_at = self._clock()
            self._set(State.OPEN)

    def abandoned(self, probe: bool) -> None:
        """The attempt ended without a verdict (cancelled): the next request probes."""
        if probe:
            self._probing = False

    def status(self) -> dict[str, object]:
        return {"state": self.state.name.lower().replace("_", "-"),
                "consecutive_failures": self.failures}

    def _set(self, state: State) -> None:
        self.state = state
        self._gauge.set(int(state))
