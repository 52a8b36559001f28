"""The orchgate process of the real stack: signals and readiness."""

from __future__ import annotations

import os
import signal

import httpx2
from devstack import LocalStack
from procs import wait_until


def test_sighup_reloads_the_policy(stack: LocalStack, proxy: httpx2.Client) -> None:
    def policy() -> dict[str, object]:
        checks: dict[str, dict[str, object]] = proxy.get("/_orchgate/readyz").json()["checks"]
        return checks["policy"]

    before = int(str(policy()["attempts"]))
    os.kill(stack.orchgate.pid, signal.SIGHUP)
    wait_until(lambda: int(str(policy()["attempts"])) > before, 10, "a reload after SIGHUP")
    after = policy()
    assert after["failures"] == 0
    assert after["last_error"] is None
    assert stack.orchgate.alive()
    assert proxy.get("/_orchgate/livez").status_code == 200
