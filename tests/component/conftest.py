"""Fixtures for component tests: orchgate under uvicorn between a fake IdP and a recording
upstream, all on loopback (see tests/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.harness import FakeIdP, Orchgate, RecordingUpstream, StartOrchgate


@pytest.fixture(scope="session")
def idp() -> Iterator[FakeIdP]:
    with FakeIdP() as server:
        yield server


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as server:
        yield server


@pytest.fixture
def start_orchgate(tmp_path: Path, idp: FakeIdP,
                   upstream: RecordingUpstream) -> Iterator[StartOrchgate]:
    """Start an orchgate with settings overrides (`Orchgate`'s keyword arguments)."""
    started: list[Orchgate] = []

    def start(**kwargs: Any) -> Orchgate:
        gate = Orchgate(tmp_path / f"orchgate-{len(started)}", idp, upstream, **kwargs)
        started.append(gate.start())
        return gate

    yield start
    for gate in reversed(started):
        gate.stop()


@pytest.fixture
def orchgate(start_orchgate: StartOrchgate) -> Orchgate:
    return start_orchgate()


@pytest.fixture
def client(orchgate: Orchgate) -> Iterator[httpx2.Client]:
    with orchgate.client() as http:
        yield http


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
