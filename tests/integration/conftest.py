"""The real local stack — dev IdP (npm oidc-provider), Airflow 3.3.2, Prefect 3.9.1 and
orchgate as processes on loopback — started once per test run and stopped by pid."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import pytest
from devstack import LocalStack, local_stack

from tests.integration.support import CAPTURED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Everything a test printed or logged, and its failure report, for the secret scan.
    CAPTURED.append(report.longreprtext + "".join(text for _, text in report.sections))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def tokens(stack: LocalStack) -> dict[str, str]:
    """One access token per persona, from the real identity provider (cached per run)."""
    return {p: stack.token(p) for p in
            ("alice", "amy", "bob", "carol", "dave", "ci-team-a", "agent-team-b")}


def _locked_out(request: httpx2.Request, response: httpx2.Response) -> bool:
    """An upstream's answer to SQLite's lock, not to the call (both dev upstreams run on it)."""
    path = request.url.path
    if response.status_code == 503 and path.startswith("/prefect/"):
        return b"Service Unavailable" in response.read()
    if (response.status_code == 500 and path.startswith("/airflow/")
            and request.method in ("GET", "PUT", "PATCH", "DELETE")):
        return b"you will find it in api server when you look for ID" in response.read()
    return False


class SqliteRetries(httpx2.HTTPTransport):
    """Send again what the upstreams' SQLite databases refused for a moment. Prefect's server
    answers a burst of writes now and then with 503 "Service Unavailable" (`database is
    locked`), and Prefect's clients retry it. Airflow's API server answers a call whose
    action-log row waited out SQLite's 5 s lock (a task run writing meanwhile) with a bare 500
    "… look for ID …" before the call itself runs; an idempotent call is sent again. orchgate
    passes both through unchanged and, rightly, never retries a write itself; a raw test client
    does what the upstream's own client, or its user, would."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        for attempt in range(5):
            response = super().handle_request(request)
            if not _locked_out(request, response):
                return response
            response.close()
            time.sleep(0.2 * (attempt + 1))
        return super().handle_request(request)


@pytest.fixture
def proxy(stack: LocalStack) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=stack.orchgate_url, timeout=60,
                       transport=SqliteRetries()) as client:
        yield client

