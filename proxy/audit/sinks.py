"""Where audit records go: an append-only, hash-chained JSON-lines file (and stdout).

Every record is sealed into the chain (audit/chain.py) and its line checked for anything
credential-shaped (audit/logging.py: a record with a hit is redacted and sealed again), then
written on an O_APPEND descriptor in the caller's thread: no fsync there, so the event loop
never waits on the disk. An outcome record (`write_later`) waits, not yet built, up to
`OUTCOME_DELAY` (or until `OUTCOME_BATCH` records wait); then the records waiting are built,
sealed one after another, their lines checked together in one pass (a hit: sealed again one by
one, each line checked on its own) and go out in one `write(2)`. Doing that work together, not
each record amid its request's work, is what keeps the trail cheap (its CPU in the running
proxy, A/B runs of separate instances and make bench): sealing them together measured a fifth
cheaper; building them there too took the trail's cost from 11–19 (mean 15) to 11–14 µs a
request; a write every 2 ms instead of one at the end of each turn of the event loop (≈8
records at 6,000 requests/s) 3–4 µs cheaper, and every 5 ms instead of 2 (≈55 records at
11,000 requests/s instead of ≈22) 1.2 µs cheaper again: ext4 takes 0.7 µs a KB in writes of
8 KB, 0.4 in writes of 32 KB, 0.3 in writes of 64 KB. When no request is under way after an
answer (pipeline.py), the records waiting are built and sealed at once (`seal_waiting`) and
only their write waits: at 2,000 requests/s the batch done in one go (≈10 records, ≈100 µs
with cold caches) kept the requests that arrived meanwhile waiting. Any other record is
sealed and goes out at once, after whatever was waiting before it: the chain's order is the
order of the calls, and the file's order is the chain's.
Write-ahead records (`write_ahead`) are also made durable: a syncer thread fsyncs on behalf of
every request waiting at that moment (group commit: concurrent requests share one fsync) and
wakes each waiter on its own event loop. The same thread writes time-based checkpoints and
closes rotated files.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog

from proxy import metrics
from proxy.audit.chain import SCHEMA, Chain, Signer
from proxy.audit.files import fsync_dir, last_record, rotated_name, siblings, trail_files
from proxy.audit.logging import plainly_clean, scrub
from proxy.audit.record import AuditRecord
from proxy.settings import AuditSettings

OUTCOME_DELAY = 0.005  # seconds an outcome record may wait to share a write(2) …
OUTCOME_BATCH = 128  # … unless this many are waiting: they go at once
_APPEND_SECONDS = metrics.AUDIT_WRITE_SECONDS.labels("append")
_FSYNC_SECONDS = metrics.AUDIT_WRITE_SECONDS.labels("fsync")
_APPEND_FAILURES = metrics.AUDIT_WRITE_FAILURES.labels("append")
_FSYNC_FAILURES = metrics.AUDIT_WRITE_FAILURES.labels("fsync")
T = TypeVar("T")
_running_loop = asyncio.events._get_running_loop  # None off a loop, without raising
_log = structlog.get_logger("orchgate.audit")


class AuditUnavailable(Exception):
    """The trail could not take a record."""


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class AuditLog:
    def __init__(self, settings: AuditSettings) -> None:
        self.settings = settings
        self.enabled = settings.enabled and (settings.file is not None or settings.stdout)
        self.failures = 0  # records that could not be written
        self.last_error: str | None = None
        self.healthy = True  # the last write succeeded
        self.fsyncs = 0  # group commits …
        self.fsynced_records = 0  # … and the write-ahead records they made durable
        self._lock = threading.Lock()  # the chain's order is the file's order
        self._sync_lock = threading.Lock()  # the descriptor being fsynced is not swapped
        self._cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._retired: list[int] = []  # rotated files' descriptors, to fsync and close
        self._closing = False
        self._chain = Chain()
        self._signer = (Signer.from_file(settings.checkpoint_key_file)
                        if settings.checkpoint_key_file else None)
        self._checkpoint_seq = 0  # the last checkpoint's seq (records after it are unsigned)
        self._last_checkpoint = time.monotonic()
        # outcome records waiting to be built and sealed: make(source)
        self._queued: list[tuple[Callable[[Any], dict[str, Any]], Any]] = []
        self._pending: list[bytes] = []  # sealed lines (or runs of them) not yet written, in order
        self._pending_bytes = 0
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # where a write is due
        self._written = (0, self._chain.head, 0)  # seq, head, checkpoint seq on the file
        self._fd: int | None = None
        self._size = 0
        self._opened = time.monotonic()
        self._checkpoint_fd: int | None = None
        self._thread: threading.Thread | None = None
        if not self.enabled:
            return
        recovered = None
        if settings.file is not None:
            recovered = self._recover(settings.file)
            self._fd = self._open(settings.file)
        if settings.checkpoint_file is not None:
            self._checkpoint_fd = self._open(settings.checkpoint_file)
        self._written = (self._chain.seq, self._chain.head, self._checkpoint_seq)
        self._thread = threading.Thread(target=self._sync_loop, name="audit-sync", daemon=True)
        self._thread.start()
        self.write({"schema": SCHEMA, "event": "start", "time": now_iso(), "pid": os.getpid(),
                    "recovered": recovered,
                    "checkpoint_key_id": self._signer.key_id if self._signer else None})

    # -- writing ----------------------------------------------------------------------------

    def write(self, record: dict[str, Any], *, soon: bool = False) -> int | None:
        """Append a record; never raises (a failure is counted). Returns its seq, or None when
        it could not be written.

        `soon`: the record waits, unsealed, as `write_later` has it wait. Its seq is not known
        here: None."""
        if soon and self.enabled:
            self.write_later(_as_is, record)
            return None
        try:
            return self.append(record)
        except AuditUnavailable:
            return None

    def write_later(self, make: Callable[[T], dict[str, Any]], source: T) -> None:
        """Append the record `make(source)` builds: up to `OUTCOME_DELAY` from now (or when
        `OUTCOME_BATCH` records wait, or before any other record), it is built, sealed after
        those waiting before it, and shares one `write(2)` with them (an outcome record;
        docs/audit.md). Off an event loop, at once. Never raises (a failure is counted).

        `source` is kept until then: it must not change meanwhile."""
        if not self.enabled:
            return
        loop = _running_loop()
        with self._lock:  # queued first: a write already under way still finds it
            queued = self._queued
            queued.append((make, source))
            full = len(queued) >= OUTCOME_BATCH
        if full or loop is None:
            self.flush()
        elif self._flush_loop is not loop:  # none due, or due on a loop that has ended
            loop.call_later(OUTCOME_DELAY, self._flush_soon)
            self._flush_loop = loop

    def append(self, record: dict[str, Any]) -> int:
        """Append a record (written to the OS, not fsynced); AuditUnavailable if it cannot.

        The record is sealed as it is: the caller hands over a dict it no longer uses."""
        if not self.enabled:
            return 0
        with self._lock:
            try:  # after the records waiting, sealed with them
                seq = self._admit([*self._built(), record])
                self._flush()
            except OSError as err:
                raise AuditUnavailable(self._failed(err)) from None
        return seq

    async def write_ahead(self, record: dict[str, Any]) -> int:
        """Append a record and wait until it is on disk (flushed and fsynced)."""
        seq = self.append(record)
        if self._fd is None or not self.settings.fsync:
            return seq
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._cond:
            self._waiters.append((loop, done))
            self._cond.notify()
        await done
        return seq

    def refuses_reads(self) -> bool:
        return self.enabled and not self.healthy and self.settings.reads_on_failure == "refuse"

    def status(self) -> dict[str, Any]:
        return {"ready": self.healthy or not self.enabled, "enabled": self.enabled,
                "failures": self.failures, "last_error": self.last_error,
                "seq": self._chain.seq, "fsyncs": self.fsyncs,
                "fsynced_records": self.fsynced_records}

    def _seal_queued(self) -> None:
        """Build and seal the records waiting for their write, in order (the caller holds the
        lock). Those after a failure to write are never sealed: counted lost."""
        records = self._built()
        if records:
            self._admit(records)

    def _built(self) -> list[dict[str, Any]]:
        """The records waiting for their write, built (the caller holds the lock)."""
        queued, self._queued = self._queued, []
        records = []
        for make, source in queued:
            try:
                records.append(make(source))
            except Exception as err:  # a record that cannot be built: counted, not the end
                self._unbuilt(err)
        return records

    def _admit(self, records: list[dict[str, Any]]) -> int:
        """Seal records into the chain in runs, rotating the file and signing a checkpoint when
        due (the caller holds the lock); the seq of the last. A run ends where a checkpoint is
        due: the checkpoint signs what is before it. On a failure to write, those not sealed
        are lost: counted here, but for one the caller counts."""
        sealed = rotating = seq = 0
        try:
            while sealed < len(records):
                rotating = 1
                self._maybe_rotate()
                rotating = 0
                end = len(records)
                if self._signer is not None:
                    room = self.settings.checkpoint_every - self._since_checkpoint()
                    end = min(end, sealed + max(room, 1))
                self._seal_run(records[sealed:end])
                sealed, seq = end, self._chain.seq
                if self._signer is not None and self._since_checkpoint() >= \
                        self.settings.checkpoint_every:
                    self._checkpoint()
        except OSError:
            # A failed write counted the lines it had; a failure to rotate leaves the one the
            # caller counts to the first of those not sealed.
            self.failures += len(records) - sealed - rotating
            raise
        return seq

    def _seal_run(self, run: list[dict[str, Any]]) -> None:
        """Seal records one after another and queue their lines as one (the caller holds the
        lock). The lines of a run of `AuditRecord`s are checked for anything credential-shaped
        together, in one pass: when something is found, the run is sealed again record by
        record, each line checked (and redacted) on its own."""
        if len(run) == 1 or any(type(r) is not AuditRecord for r in run):
            for record in run:
                self._put(record)
            return
        seq, head = self._chain.seq, self._chain.head
        seal = self._chain.seal
        data = b"".join([seal(record) for record in run])
        if plainly_clean(data, None):
            self._pending.append(data)
            self._pending_bytes += len(data)
            return
        self._chain.seq, self._chain.head = seq, head
        for record in run:
            self._put(record)  # sealed again: its old hash left out of the canonical form

    def _put(self, event: dict[str, Any], signer: Signer | None = None) -> int:
        """Seal a record into the chain and queue its line (the caller holds the lock)."""
        seq, head = self._chain.seq, self._chain.head
        line = self._chain.seal(event, signer)
        # Key names of an AuditRecord were checked where it was built (audit/record.py).
        if not plainly_clean(line, None if type(event) is AuditRecord else event):
            # something credential-shaped: redact, seal again
            self._chain.seq, self._chain.head = seq, head
            event = {k: v for k, v in event.items() if k not in _SEALED}
            scrub(event)  # in place
            line = self._chain.seal(event, signer)
        self._pending.append(line)
        self._pending_bytes += len(line)
        return self._chain.seq

    def _since_checkpoint(self) -> int:
        return self._chain.seq - self._checkpoint_seq

    def flush(self) -> None:
        """Seal and write the outcome records waiting, now (any thread; never raises)."""
        with self._lock:
            try:
                self._seal_queued()
                self._flush()
            except OSError as err:
                self._failed(err)

    def seal_waiting(self) -> None:
        """Build and seal the outcome records waiting, now; their write still waits (up to
        `OUTCOME_DELAY` from the first) to share one `write(2)`. For a moment when nothing
        else is under way: what a later flush would do in one go is done while no request
        waits behind it. Never raises (a failure is counted)."""
        if not self._queued:
            return
        with self._lock:
            try:
                self._seal_queued()
            except OSError as err:
                self._failed(err)

    def _flush_soon(self) -> None:
        self._flush_loop = None
        self.flush()

    def _flush(self) -> None:
        """Write every pending line with one `write(2)` (the caller holds the lock). On a
        failure the chain goes back to the last record on file: the lost lines never were."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        count = self._chain.seq - self._written[0]  # records in it (a run's lines are one item)
        self._pending.clear()
        self._pending_bytes = 0
        started = time.perf_counter()
        try:
            if self._fd is not None:
                self._write_all(self._fd, data)
                self._size += len(data)
            if self.settings.stdout:
                sys.stdout.write(data.decode())
                sys.stdout.flush()
        except OSError:
            self._chain.seq, self._chain.head, self._checkpoint_seq = self._written
            self.failures += count - 1  # _failed counts one
            raise
        self._written = (self._chain.seq, self._chain.head, self._checkpoint_seq)
        _APPEND_SECONDS.observe(time.perf_counter() - started)
        self.healthy = True

    def _failed(self, err: OSError) -> str:
        self.failures += 1
        self.healthy = False
        self.last_error = f"{type(err).__name__}: {err.strerror or err}"
        _APPEND_FAILURES.inc()
        return self.last_error

    def _unbuilt(self, err: Exception) -> None:
        self.failures += 1
        self.last_error = f"a record could not be built: {type(err).__name__}"
        _APPEND_FAILURES.inc()
        _log.error("audit_record_unbuilt", error=type(err).__name__)

    def _write_all(self, fd: int, line: bytes) -> None:
        start = self._size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            # A partial line would sit in the middle of the file: cut it off again.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise

    def _checkpoint(self) -> None:
        assert self._signer is not None
        record = {"schema": SCHEMA, "event": "checkpoint", "time": now_iso(),
                  "from_seq": self._checkpoint_seq + 1}
        self._checkpoint_seq = self._put(record, self._signer)
        self._flush()  # a checkpoint is written at once, with everything before it
        if self._checkpoint_fd is not None:  # the second sink: a copy of every checkpoint
            with contextlib.suppress(OSError):
                os.write(self._checkpoint_fd, orjson_line(record))
        self._last_checkpoint = time.monotonic()

    # -- files ------------------------------------------------------------------------------

    @staticmethod
    def _open(path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _recover(self, live: Path) -> str | None:
        """Continue the chain where the trail ends. A torn last line (a crash mid-write) stays
        at the end of its file: that file is rotated away, and verify reports it as torn."""
        recovered = None
        last, torn = (None, False)
        if live.is_file():
            last, torn = last_record(live)
            if torn:
                target = rotated_name(live)
                live.rename(target)
                fsync_dir(live.parent)
                recovered = f"torn last line in {target.name}"
        if last is None:
            rotated = trail_files(siblings(live))
            if rotated:
                last, _ = last_record(rotated[-1])
        if last is not None and isinstance(last.get("seq"), int):
            self._chain = Chain(last["seq"], str(last.get("hash")))
            self._checkpoint_seq = last["seq"]
        if live.is_file():
            self._size = live.stat().st_size
        return recovered

    def _maybe_rotate(self) -> None:
        live = self.settings.file
        if self._fd is None or live is None or self._size == 0:
            return
        if (self._size + self._pending_bytes < self.settings.rotate_bytes
                and (self.settings.rotate_seconds <= 0
                     or time.monotonic() - self._opened < self.settings.rotate_seconds)):
            return
        if self._signer is not None:
            self._checkpoint()  # each rotated file ends signed
        self._flush()
        live.rename(rotated_name(live))
        with self._sync_lock:
            self._retired.append(self._fd)
            self._fd = self._open(live)
        self._size = 0
        self._opened = time.monotonic()
        with self._cond:
            self._cond.notify()

    # -- the syncer thread ------------------------------------------------------------------

    def _sync_loop(self) -> None:
        while True:
            with self._cond:
                if not self._waiters and not self._retired and not self._closing:
                    self._cond.wait(self.settings.checkpoint_seconds)
                waiters, self._waiters = self._waiters, []
                closing = self._closing
            error: OSError | None = None
            with self._sync_lock:
                retired, self._retired = self._retired, []
                try:
                    for fd in retired:
                        os.fsync(fd)
                        os.close(fd)
                    if retired and self.settings.file is not None:
                        fsync_dir(self.settings.file.parent)
                    if waiters and self._fd is not None:
                        started = time.perf_counter()
                        os.fsync(self._fd)
                        _FSYNC_SECONDS.observe(time.perf_counter() - started)
                except OSError as err:
                    error = err
                    _FSYNC_FAILURES.inc()
            if waiters:
                self.fsyncs += 1
                self.fsynced_records += len(waiters)
                for loop, done in waiters:
                    with contextlib.suppress(RuntimeError):  # that loop is gone
                        loop.call_soon_threadsafe(_settle, done, error)
            if (self._signer is not None and self._since_checkpoint()
                    and time.monotonic() - self._last_checkpoint
                    >= self.settings.checkpoint_seconds):
                with self._lock, contextlib.suppress(OSError):
                    self._checkpoint()
            if closing:
                return

    def close(self) -> None:
        if self._thread is not None:
            with self._cond:
                self._closing = True
                self._cond.notify()
            self._thread.join(10)
            self._thread = None
        with self._lock:
            with contextlib.suppress(OSError):
                self._seal_queued()
                self._flush()
            if self._signer is not None and self._since_checkpoint() and self.healthy:
                with contextlib.suppress(OSError):
                    self._checkpoint()  # the tail is sealed on an orderly stop
            for fd in (self._fd, self._checkpoint_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.fsync(fd)
                    os.close(fd)
            self._fd = self._checkpoint_fd = None
            self.enabled = False


_SEALED = ("seq", "prev", "hash", "key_id", "signature")  # what sealing adds


def _as_is(record: dict[str, Any]) -> dict[str, Any]:
    return record


def _settle(done: asyncio.Future[None], error: OSError | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(AuditUnavailable(f"fsync: {error.strerror or error}"))


def orjson_line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, default=str) + b"\n"
