"""The Prefect auth string is read from its file while requests run: no request fails."""

from __future__ import annotations

import os
import threading

import httpx2
from devstack import LocalStack

from tests.integration.support import bearer


def test_rewriting_the_auth_string_file_during_requests_fails_none(
        stack: LocalStack, proxy: httpx2.Client, tokens: dict[str, str]) -> None:
    secret = stack.workdir / "secrets" / "prefect-auth-string"
    value = secret.read_text(encoding="utf-8")
    stop = threading.Event()
    rewrites = 0

    def rotate() -> None:
        # Both ways a file gets rewritten: in place (briefly empty) and by atomic rename.
        nonlocal rewrites
        while not stop.is_set():
            with secret.open("w", encoding="utf-8") as f:
                f.flush()
                f.write(value)
            staged = secret.with_suffix(".new")
            staged.write_text(value, encoding="utf-8")
            os.chmod(staged, 0o600)
            os.replace(staged, secret)
            rewrites += 2

    rotator = threading.Thread(target=rotate)
    rotator.start()
    try:
        statuses = [proxy.get(f"/prefect/api/deployments/{stack.deployments['team-a-etl/nightly']}",
                              headers=bearer(tokens["amy"])).status_code for _ in range(60)]
    finally:
        stop.set()
        rotator.join(10)
    assert rewrites > 10
    assert statuses == [200] * 60
