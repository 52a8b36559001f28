"""Retry budget, circuit breaker and which operations may be retried (upstream/resilience.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.catalog import airflow, prefect
from proxy.catalog.operation import Catalog
from proxy.errors import Reject
from proxy.settings import BreakerSettings, MetricsSettings, RetrySettings, load_settings
from proxy.upstream.resilience import CircuitBreaker, RetryBudget, State
from tests.unit.test_settings import confdir, problems, valid, write

__all__ = ["confdir"]  # the fixture, shared with the settings tests


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_allows_a_share_of_recent_requests_plus_a_minimum() -> None:
    clock = Clock()
    budget = RetryBudget(0.1, minimum=2, window=10.0, clock=clock)
    for _ in range(100):
        budget.request()
    assert sum(budget.spend() for _ in range(20)) == 12  # 2 + 10 % of 100
    clock.now += 5.0  # half a window later the requests still count, the retries too
    assert not budget.spend()
    clock.now += 10.0  # a whole window later: only the minimum
    assert [budget.spend() for _ in range(3)] == [True, True, False]


def test_breaker_opens_after_consecutive_failures_and_answers_503() -> None:
    clock = Clock()
    breaker = CircuitBreaker("airflow", BreakerSettings(failures=3, cooldown_seconds=10),
                             clock=clock)
    for _ in range(2):
        assert breaker.admit() is False
        breaker.failed(False)
    breaker.succeeded(False)  # an answer resets the count: consecutive failures only
    for _ in range(3):
        breaker.admit()
        breaker.failed(False)
    assert breaker.state == State.OPEN
    clock.now += 4
    with pytest.raises(Reject) as rejected:
        breaker.admit()
    assert rejected.value.status == 503 and rejected.value.slug == "upstream-unavailable"
    assert dict(rejected.value.headers)[b"retry-after"] == b"6"


def test_breaker_half_opens_with_one_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker("prefect", BreakerSettings(failures=1, cooldown_seconds=5),
                             clock=clock)
    breaker.admit()
    breaker.failed(False)
    clock.now += 5
    assert breaker.admit() is True  # the probe
    with pytest.raises(Reject):
        breaker.admit()  # only one at a time
    breaker.failed(True)  # the probe failed: open for a new cool-down
    assert breaker.state == State.OPEN
    with pytest.raises(Reject):
        breaker.admit()
    clock.now += 5
    assert breaker.admit() is True
    breaker.abandoned(True)  # cancelled: the next request probes
    assert breaker.admit() is True
    breaker.succeeded(True)
    assert breaker.status()["state"] == "closed"
    assert breaker.admit() is False


def _op(catalog: Catalog, name: str) -> bool:
    return next(op for op in catalog.operations if op.name == name).idempotent


def test_idempotent_operations_are_reads_never_writes() -> None:
    assert _op(airflow.CATALOG, "get_dag")
    assert _op(airflow.CATALOG, "get_list_dag_runs_batch")  # POST …/dagRuns/list
    assert not _op(airflow.CATALOG, "favorite_dag")  # a READ POST that writes
    assert not _op(airflow.CATALOG, "trigger_dag_run")
    assert _op(prefect.CATALOG, "read_flow_runs")  # POST /flow_runs/filter
    assert _op(prefect.CATALOG, "read_work_pools")
    assert not _op(prefect.CATALOG, "create_flow_run")
    assert not _op(prefect.CATALOG, "bulk_delete_flow_runs")  # a LIST that writes
    assert not _op(prefect.CATALOG, "worker_heartbeat")


def test_operations_settings_parse_and_default(confdir: Path) -> None:
    plain = load_settings(write(confdir, valid()))
    assert plain.metrics is None  # absent: no metrics endpoint
    assert plain.retries == RetrySettings() and plain.circuit_breaker == BreakerSettings()
    configured = load_settings(write(confdir, {**valid(), "metrics": {"port": 9464},
                                               "retries": {"attempts": 0},
                                               "circuit_breaker": {"cooldown_seconds": 2}}))
    assert configured.metrics == MetricsSettings(host="127.0.0.1", port=9464)
    assert configured.retries.attempts == 0
    assert configured.circuit_breaker == BreakerSettings(failures=5, cooldown_seconds=2.0)
    found = "\n".join(problems(confdir, {**valid(), "metrics": {"port": 70000, "path": "/x"},
                                         "retries": {"attempts": 9, "budget_ratio": 2},
                                         "circuit_breaker": {"failures": 0}}))
    assert "metrics.port: must be between 0 and 65535" in found
    assert "metrics.path: unknown key" in found
    assert "retries.attempts: must be between 0 and 5" in found
    assert "retries.budget_ratio: must be between 0 and 1" in found
    assert "circuit_breaker.failures: must be greater than 0" in found
