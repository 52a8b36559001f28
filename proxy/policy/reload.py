"""The active policy: one immutable snapshot, replaced whole.

A reload parses, lints and compiles a new snapshot in a worker thread (never on the event
loop), then swaps one reference; a request reads `current` once and decides with that
snapshot throughout, so no request ever sees a half-loaded policy. An invalid change leaves
the old snapshot in force and is reported: logged with file:line, counted, and shown in
`/_orchgate/readyz`. pycasbin's own `load_policy()` is not used here: it raises RecursionError
on large group sets, and SyncedEnforcer's auto-reload swallows errors (DESIGN.md §2).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from proxy import heap, metrics
from proxy.policy.engine import PolicySnapshot, compile_policy
from proxy.policy.model import PolicyError, load_policy

WATCH_INTERVAL_SECONDS = 1.0
SETTLE_SECONDS = 0.2  # a change counts once the files have looked the same for this long
SETTLE_ROUNDS = 25  # … or after 5 s of constant change, whatever the files look like then


async def _retire(snapshot: PolicySnapshot) -> None:
    """Free a snapshot nobody decides with any more off the event loop, a piece at a time
    (PolicySnapshot.dismantle). One still held elsewhere (a request between two steps) is
    left to its last reference."""
    if sys.getrefcount(snapshot) <= _OWN_REFERENCES:
        await asyncio.to_thread(snapshot.dismantle)


# getrefcount's own argument, the caller's variable and this function's parameter
_OWN_REFERENCES = 3


class PolicyStore:
    def __init__(self, model: Path, files: tuple[Path, ...], log: Any,
                 name: str = "policy") -> None:
        self._model = model
        self._files = files
        self._log = log
        self.name = name
        self._stamp = self._stamps()
        self.current: PolicySnapshot = self._build(1)  # an invalid policy at start: no start
        self.last_error: str | None = None
        self.loaded_at = time.time()
        self.attempts = 0
        self.reloads = 0
        self.failures = 0
        self._lock = asyncio.Lock()
        self._generation = metrics.POLICY_GENERATION.labels(name)
        self._generation.set(self.current.generation)
        # Series exist from the start, at zero: a rate over a missing series is no alert.
        self._reloads = metrics.POLICY_RELOADS.labels(name)
        self._failures = metrics.POLICY_RELOAD_FAILURES.labels(name)

    def _build(self, generation: int) -> PolicySnapshot:
        return compile_policy(load_policy(self._model, self._files), generation)

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in (self._model, *self._files):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((-1, -1))
        return tuple(out)

    async def reload(self) -> bool:
        """Build and swap in a new snapshot; False (old one kept) when the files are invalid."""
        async with self._lock:
            self.attempts += 1
            self._stamp = self._stamps()
            start = time.perf_counter()
            try:
                # Handed back in a list, not as the thread's result: a finished future lingers
                # until a collection, and the snapshot in it could not be retired piecemeal.
                built: list[PolicySnapshot] = []
                generation = self.current.generation + 1
                with heap.building():
                    await asyncio.to_thread(lambda: built.append(self._build(generation)))
                snapshot = built.pop()
            except PolicyError as err:
                self.failures += 1
                self._failures.inc()
                self.last_error = "; ".join(err.problems[:5])
                self._log.error("policy_reload_failed", policy=self.name, problems=err.problems,
                                generation=self.current.generation)
                return False
            if snapshot.digest == self.current.digest:
                self.last_error = None
                await _retire(snapshot)
                return True  # touched but unchanged: keep the generation (and its caches)
            retired, self.current = self.current, snapshot
            self.reloads += 1
            self._reloads.inc()
            self._generation.set(snapshot.generation)
            self.last_error = None
            self.loaded_at = time.time()
            self._log.info("policy_reloaded", policy=self.name, generation=snapshot.generation,
                           digest=snapshot.digest, rules=len(snapshot.source.rules),
                           seconds=round(time.perf_counter() - start, 3))
            await _retire(retired)
            return True

    async def watch(self, interval: float = WATCH_INTERVAL_SECONDS) -> None:
        """Reload when a file's modification time or size changes (polling: it works the same
        on a ConfigMap's symlink swap, a bind mount and an editor's rename)."""
        while True:
            await asyncio.sleep(interval)
            if self._stamps() != self._stamp:
                await self._settled()
                await self.reload()

    async def _settled(self) -> None:
        """Wait until the files stop changing: an editor or a `cp` may be halfway through a
        write, and a truncated file can still parse — as a policy missing its last rows."""
        seen = self._stamps()
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(SETTLE_SECONDS)
            now = self._stamps()
            if now == seen:
                return
            seen = now

    def status(self) -> dict[str, Any]:
        return {"generation": self.current.generation, "digest": self.current.digest,
                "rules": len(self.current.source.rules), "attempts": self.attempts,
                "reloads": self.reloads,
                "failures": self.failures, "last_error": self.last_error}
