"""Small helpers shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

FLOWS = Path(__file__).parent / "flows"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Output pytest captured from each integration test (stdout, stderr, logs, failure reports),
# collected by conftest.py for test_zz_secret_scan.py.
CAPTURED: list[str] = []
