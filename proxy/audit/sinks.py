"""Where audit records go: an append-only, hash-chained JSON-lines file (and stdout).

Every record passes `redact` (audit/logging.py), is sealed into the chain (audit/chain.py) and
written with one `write(2)` on an O_APPEND descriptor, in the caller's thread: no fsync there,
so the event loop never waits on the disk. Write-ahead records (`write_ahead`) are also made
durable: a syncer thread fsyncs on behalf of every request waiting at that moment (group
commit: concurrent requests share one fsync) and wakes each waiter on its own event loop.
The same thread writes time-based checkpoints and closes rotated files.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from proxy import metrics
from proxy.audit.chain import SCHEMA, Chain, Signer
from proxy.audit.files import fsync_dir, last_record, rotated_name, siblings, trail_files
from proxy.audit.logging import redact
from proxy.settings import AuditSettings

_APPEND_SECONDS = metrics.AUDIT_WRITE_SECONDS.labels("append")
_FSYNC_SECONDS = metrics.AUDIT_WRITE_SECONDS.labels("fsync")
_APPEND_FAILURES = metrics.AUDIT_WRITE_FAILURES.labels("append")
_FSYNC_FAILURES = metrics.AUDIT_WRITE_FAILURES.labels("fsync")


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
        self._since_checkpoint = 0
        self._checkpoint_from = 1
        self._last_checkpoint = time.monotonic()
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
        self._thread = threading.Thread(target=self._sync_loop, name="audit-sync", daemon=True)
        self._thread.start()
        self.write({"schema": SCHEMA, "event": "start", "time": now_iso(), "pid": os.getpid(),
                    "recovered": recovered,
                    "checkpoint_key_id": self._signer.key_id if self._signer else None})

    # -- writing ----------------------------------------------------------------------------

    def write(self, record: dict[str, Any]) -> int | None:
        """Append a record; never raises (a failure is counted). Returns its seq."""
        try:
            return self.append(record)
        except AuditUnavailable:
            return None

    def append(self, record: dict[str, Any]) -> int:
        """Append a record (flushed to the OS, not fsynced); AuditUnavailable if it cannot."""
        if not self.enabled:
            return 0
        event = dict(redact(None, "", dict(record)))
        started = time.perf_counter()
        with self._lock:
            try:
                self._maybe_rotate()
                seq = self._put(event)
                if self._signer is not None and (self._since_checkpoint
                                                 >= self.settings.checkpoint_every):
                    self._checkpoint()
            except OSError as err:
                self.failures += 1
                self.healthy = False
                self.last_error = f"{type(err).__name__}: {err.strerror or err}"
                _APPEND_FAILURES.inc()
                raise AuditUnavailable(self.last_error) from None
        _APPEND_SECONDS.observe(time.perf_counter() - started)
        self.healthy = True
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

    def _put(self, event: dict[str, Any], signer: Signer | None = None) -> int:
        """Seal and write one record; the chain moves only if the whole line was written."""
        seq, head = self._chain.seq, self._chain.head
        line = self._chain.seal(event, signer)
        try:
            if self._fd is not None:
                self._write_all(self._fd, line)
                self._size += len(line)
            if self.settings.stdout:
                sys.stdout.write(line.decode())
                sys.stdout.flush()
        except OSError:
            self._chain.seq, self._chain.head = seq, head
            raise
        if signer is None:
            self._since_checkpoint += 1
        return self._chain.seq

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
                  "from_seq": self._checkpoint_from}
        self._put(record, self._signer)
        if self._checkpoint_fd is not None:  # the second sink: a copy of every checkpoint
            with contextlib.suppress(OSError):
                os.write(self._checkpoint_fd, orjson_line(record))
        self._since_checkpoint = 0
        self._checkpoint_from = self._chain.seq + 1
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
            self._checkpoint_from = last["seq"] + 1
        if live.is_file():
            self._size = live.stat().st_size
        return recovered

    def _maybe_rotate(self) -> None:
        live = self.settings.file
        if self._fd is None or live is None or self._size == 0:
            return
        too_old = (self.settings.rotate_seconds > 0
                   and time.monotonic() - self._opened >= self.settings.rotate_seconds)
        if self._size < self.settings.rotate_bytes and not too_old:
            return
        if self._signer is not None:
            self._checkpoint()  # each rotated file ends signed
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
            if (self._signer is not None and self._since_checkpoint
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
            if self._signer is not None and self._since_checkpoint and self.healthy:
                with contextlib.suppress(OSError):
                    self._checkpoint()  # the tail is sealed on an orderly stop
            for fd in (self._fd, self._checkpoint_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.fsync(fd)
                    os.close(fd)
            self._fd = self._checkpoint_fd = None
            self.enabled = False


def _settle(done: asyncio.Future[None], error: OSError | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(AuditUnavailable(f"fsync: {error.strerror or error}"))


def orjson_line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, default=str) + b"\n"
