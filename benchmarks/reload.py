"""One policy reload under a constant offered rate: does it show in the callers' latency?

A round is two runs of the same length at the same rate against one orchgate worker (the
full pipeline, a 10,009-row policy, the policy watcher on). In the first, `at` seconds in,
the policy file is replaced the way an editor or a ConfigMap does it (a new file renamed
over the old one, one comment line more: a new digest, a real reload); orchgate's log says
when the new snapshot was swapped in. The *window* runs from the rename to 0.25 s after the
swap: it holds the watcher's noticing, the build in a thread, the swap, and what follows.
The second run has no reload; the same stretch of it (the same offsets from its start) is
the comparison. Latencies are from each request's due time (benchmarks/load.py), so a stall
counts for every request it delayed.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load import constant_rate, percentile

AFTER_SWAP_SECONDS = 0.25
SWAP_WAIT_SECONDS = 10.0
LOG_MARK = b'"policy_reloaded"'


@dataclass(slots=True)
class Edit:
    """Replace the policy at a given time and note when orchgate swapped it in."""

    policy: Path
    log: Path
    at: float  # seconds after `start`
    start: float = 0.0
    renamed: float = float("nan")
    swapped: float = float("nan")

    def prepare(self) -> None:
        """The new file, written before the run: at `at` only the rename happens (writing
        500 KB in the load generator's process would stall the generator itself)."""
        fresh = self.policy.with_name(self.policy.name + ".new")
        fresh.write_text(self.policy.read_text() + f"# edited at {time.time():.3f}\n")

    def run(self) -> None:
        seen = self.log.read_bytes().count(LOG_MARK)
        time.sleep(max(0.0, self.start + self.at - time.monotonic()))
        self.renamed = time.monotonic()
        os.replace(self.policy.with_name(self.policy.name + ".new"), self.policy)
        deadline = self.renamed + SWAP_WAIT_SECONDS
        while time.monotonic() < deadline:  # the log line is written at the swap
            if self.log.read_bytes().count(LOG_MARK) > seen:
                self.swapped = time.monotonic()
                return
            time.sleep(0.005)


def window(timeline: list[tuple[float, float]], begin: float, end: float) -> list[float]:
    """Latencies of the requests due in [begin, end), offsets from the run's first request."""
    if not timeline:
        return []
    first = min(due for due, _ in timeline)
    return [ms for due, ms in timeline if begin <= due - first < end]


def reload_round(url: str, token: str, policy: Path, log: Path, rate: float,
                 seconds: float, at: float) -> dict[str, float]:
    """One run with a reload and one without; p50/p99/max of the window in each."""
    edited: list[tuple[float, float]] = []
    edit = Edit(policy, log, at)
    edit.prepare()
    edit.start = time.monotonic()
    thread = threading.Thread(target=edit.run, daemon=True)
    thread.start()
    reloading = constant_rate(url, token, rate, seconds, timeline=edited)
    thread.join(SWAP_WAIT_SECONDS + seconds)
    if edit.swapped != edit.swapped:  # nan: the reload was never seen
        raise SystemExit("the policy edit was not reloaded within "
                         f"{SWAP_WAIT_SECONDS:g} s (see orchgate's log)")
    first = min(due for due, _ in edited)
    begin, end = edit.renamed - first, edit.swapped + AFTER_SWAP_SECONDS - first
    steady: list[tuple[float, float]] = []
    quiet = constant_rate(url, token, rate, seconds, timeline=steady)
    during, without = window(edited, begin, end), window(steady, begin, end)
    return {
        "window_start_s": round(begin, 3), "window_seconds": round(end - begin, 3),
        "swap_after_rename_s": round(edit.swapped - edit.renamed, 3),
        "requests_in_window": len(during),
        "reload_p50_ms": percentile(during, 50), "reload_p99_ms": percentile(during, 99),
        "reload_max_ms": max(during, default=float("nan")),
        "steady_p50_ms": percentile(without, 50), "steady_p99_ms": percentile(without, 99),
        "steady_max_ms": max(without, default=float("nan")),
        "reload_run_p99_ms": reloading.p99_ms, "steady_run_p99_ms": quiet.p99_ms,
        "errors": reloading.errors + quiet.errors + reloading.non_2xx + quiet.non_2xx,
    }
