"""CPython's garbage collector, set for a server that holds a large heap and answers fast.

A started orchgate holds about 90,000 long-lived objects (the compiled policy, the catalogs,
the libraries); a request makes a few hundred short-lived ones that reference counting frees.
With the default thresholds the collector ran every 700 allocations and its older
generations walked the whole heap again and again: 10–14 µs of every request, and pauses
that set the p99 at 16 connections (docs/performance.md). So, in `orchgate serve` only:

- `tune()`: young collections every 10,000 allocations instead of 700;
- `settle()`, once started: collect, then move everything alive into the permanent
  generation (`gc.freeze`), which no collection walks again;
- a policy reload builds its snapshot while `building()`: no collections meanwhile (every
  object it makes stays alive), and the new snapshot frozen before they resume — the first
  collection after a build used to walk all of it, a 4 ms stall of the event loop at 2,000
  requests/s (benchmarks/reload.py). A frozen object is still freed when its reference count
  drops to zero, and a snapshot holds no reference cycles: the retired one is taken apart in a
  worker thread (PolicySnapshot.dismantle) or freed by its last reference
  (tests/unit/test_heap.py, tests/unit/test_policy_retire.py). What else is young when a build
  ends is frozen with it: a request's garbage cycles made in those milliseconds stay.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

YOUNG_THRESHOLD = 10_000
_tuned = False
_pauses = 0


def tune() -> None:
    global _tuned
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, max(middle, 20), max(old, 100))
    _tuned = True


def settle() -> None:
    """After start-up: what is alive now lives as long as the process (or the policy)."""
    if _tuned:
        gc.collect()
        gc.freeze()


@contextlib.contextmanager
def building() -> Iterator[None]:
    """No collections while a snapshot is built; what was built is frozen before they resume
    (nested uses count: the last one out freezes)."""
    global _pauses
    if not _tuned:
        yield
        return
    _pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _pauses -= 1
        if _pauses == 0:
            gc.freeze()
            gc.enable()
