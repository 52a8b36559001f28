"""Fixtures for the hostile-input suite: one orchgate (real uvicorn) between two fake issuers
and a recording upstream, shared by the table-driven cases; availability cases start their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import FakeIdP, Orchgate, RecordingUpstream, Reply
from tests.security.kit import HEALTH_PATHS, SECURITY_LIMITS, Kit


@pytest.fixture(scope="session")
def idp() -> Iterator[FakeIdP]:
    with FakeIdP() as server:
        yield server


@pytest.fixture(scope="session")
def other_idp() -> Iterator[FakeIdP]:
    """A second trusted issuer: its keys must never verify the first one's tokens."""
    with FakeIdP() as server:
        yield server


def script_health(upstream: RecordingUpstream) -> None:
    """readyz asks the upstreams' health paths: the recording upstream answers them."""
    upstream.on("GET", HEALTH_PATHS[0], Reply({"metadatabase": {"status": "healthy"}}))
    upstream.on("GET", HEALTH_PATHS[1], Reply(True))


@pytest.fixture(scope="session")
def shared_upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as server:
        script_health(server)
        yield server


@pytest.fixture(scope="session")
def shared_gate(tmp_path_factory: pytest.TempPathFactory, idp: FakeIdP, other_idp: FakeIdP,
                shared_upstream: RecordingUpstream) -> Iterator[Orchgate]:
    overrides: dict[str, Any] = {
        "issuers": [{"issuer": idp.issuer, "audiences": ["orchgate"]},
                    {"issuer": other_idp.issuer, "audiences": ["orchgate"]}],
        "limits": SECURITY_LIMITS,
    }
    with Orchgate(tmp_path_factory.mktemp("security"), idp, shared_upstream,
                  overrides=overrides) as gate:
        yield gate


@pytest.fixture
def kit(shared_gate: Orchgate, shared_upstream: RecordingUpstream, idp: FakeIdP,
        other_idp: FakeIdP) -> Kit:
    shared_upstream.reset()
    shared_upstream.default = Reply({"recorded": True})
    return Kit(shared_gate, shared_upstream, idp, other_idp)


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    """A recording upstream of a test's own (for orchgates started by the test)."""
    with RecordingUpstream() as server:
        script_health(server)
        yield server


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
