"""The real local stack — dev IdP (npm oidc-provider), Airflow 3.3.2, Prefect 3.9.1 and
orchgate as processes on loopback — started once per test run and stopped by pid."""

from __future__ import annotations

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


@pytest.fixture
def proxy(stack: LocalStack) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=stack.orchgate_url, timeout=60) as client:
        yield client

