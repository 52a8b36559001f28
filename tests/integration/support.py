"""Small helpers shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

FLOWS = Path(__file__).parent / "flows"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
