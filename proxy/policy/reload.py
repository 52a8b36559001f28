"""The active policy: one immutable snapshot, replaced whole.

A reload parses and compiles a new snapshot in a worker thread (never on the event loop),
then swaps one reference; a request reads `current` once and uses that snapshot throughout.
An invalid file leaves the old snapshot in force and is reported (log, readiness detail).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from proxy.policy.engine import PolicySnapshot, compile_policy
from proxy.policy.model import PolicyError, load_policy
from proxy.settings import PolicySettings


class PolicyStore:
    def __init__(self, settings: PolicySettings, log: Any) -> None:
        self._settings = settings
        self._log = log
        self.current: PolicySnapshot = self._build(1)  # an invalid policy at start: no start
        self.last_error: str | None = None
        self.loaded_at = time.time()

    def _build(self, generation: int) -> PolicySnapshot:
        return compile_policy(load_policy(self._settings.model, self._settings.files),
                              generation)

    async def reload(self) -> bool:
        try:
            snapshot = await asyncio.to_thread(self._build, self.current.generation + 1)
        except PolicyError as err:
            self.last_error = "; ".join(err.problems[:5])
            self._log.error("policy_reload_failed", problems=err.problems,
                            generation=self.current.generation)
            return False
        self.current = snapshot
        self.last_error = None
        self.loaded_at = time.time()
        self._log.info("policy_reloaded", generation=snapshot.generation, digest=snapshot.digest)
        return True

    def status(self) -> dict[str, Any]:
        return {"generation": self.current.generation, "digest": self.current.digest,
                "rules": len(self.current.source.rules), "last_error": self.last_error}
