"""Start, watch and stop local service processes for the demo and the integration tests.

Stdlib only, so the orchgate dev venv, the test fixtures and the demo script can all import it.

Every process starts in its own session (and so its own process group): servers such as the
Airflow scheduler or a Prefect worker fork children, and stopping the group by its id reaches
all of them without ever matching processes by name (other checkouts may run the same tools).
Descendants that move to sessions of their own are tracked by pid and stopped too.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

__all__ = [
    "Proc",
    "Stack",
    "StartupError",
    "free_port",
    "http",
    "run",
    "start",
    "tail",
    "wait_http",
    "wait_until",
]

TAIL_LINES = 40


class StartupError(RuntimeError):
    """A service did not start (or a set-up command failed); the message carries its log tail."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel picks it; a small race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            # Logs can be large; reading the last 64 KiB is plenty for 40 lines.
            fh.seek(max(0, fh.tell() - 65536))
            data = fh.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


@dataclass(frozen=True)
class _Stat:
    ppid: int
    pgrp: int
    zombie: bool
    starttime: int  # clock ticks after boot: (pid, starttime) names a process uniquely


def _scan() -> dict[int, _Stat] | None:
    """A snapshot of /proc (None where there is no /proc, i.e. not Linux)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return None
    table: dict[int, _Stat] = {}
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # Fields after the parenthesised command name: state ppid pgrp session ... (field 22
        # of the whole line, starttime, is index 19 here).
        rest = stat[stat.rfind(")") + 2 :].split()
        table[int(entry.name)] = _Stat(int(rest[1]), int(rest[2]), rest[0] == "Z", int(rest[19]))
    return table


def _descendants(root: int, table: Mapping[int, _Stat]) -> dict[int, int]:
    """{pid: starttime} of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(st.ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found and not table[pid].zombie:
            found[pid] = table[pid].starttime
            todo.extend(children.get(pid, []))
    return found


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


_LIVE: set[Proc] = set()


@dataclass(eq=False)
class Proc:
    """A started service: its own process group, its log file, and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    # Signals sent to the group (with ``grace`` seconds between them) before SIGTERM.
    # Prefect workers, for example, only shut down cleanly after two SIGINTs.
    soft_signals: tuple[signal.Signals, ...] = ()
    grace: float = 3.0
    _log: IO[bytes] | None = field(default=None, repr=False)
    _tracked: dict[int, int] = field(default_factory=dict, repr=False)  # pid -> starttime

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def pgid(self) -> int:
        # start_new_session=True makes the child a session and group leader: pgid == pid.
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def _leftovers(self) -> dict[int, bool]:
        """{pid: in our group} of live processes in our group or descended from our leader.

        Some tools put children in sessions of their own (a Prefect process worker does so
        for each flow run). Those are tracked by pid + start time while the leader lives, so
        a leader that has to be SIGKILLed cannot orphan them unseen.
        """
        table = _scan()
        if table is None:  # no /proc: probe the group with signal 0
            try:
                os.killpg(self.pgid, 0)
            except ProcessLookupError:
                return {}
            return {self.pgid: True}
        if self.popen.poll() is None:  # until reaped, our pid cannot name another process
            self._tracked.update(_descendants(self.pid, table))
        return {
            pid: st.pgrp == self.pgid
            for pid, st in table.items()
            if not st.zombie  # dead; a reparented zombie waits for a reaper we do not control
            and (st.pgrp == self.pgid or self._tracked.get(pid) == st.starttime)
        }

    def _wait_gone(self, timeout: float) -> bool:
        """Wait until the leader has exited and nothing of it is left; True if so."""
        deadline = time.monotonic() + timeout
        while True:
            self.popen.poll()  # reap the leader so it does not linger as a zombie
            if self.popen.returncode is not None and not self._leftovers():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _signal_all(self, sig: signal.Signals) -> None:
        escaped = [pid for pid, in_group in self._leftovers().items() if not in_group]
        _signal_group(self.pgid, sig)
        for pid in escaped:
            _signal_pid(pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the process group: soft signals, SIGTERM, then SIGKILL. Idempotent.

        Soft signals go to the group only (the tool shuts its own children down); SIGTERM
        and SIGKILL also reach descendants that moved to sessions of their own.
        Returns the leader's exit code (None if it could not be reaped).
        """
        try:
            if not self._wait_gone(0):
                for sig in self.soft_signals:
                    _signal_group(self.pgid, sig)
                    if self._wait_gone(self.grace):
                        break
                if not self._wait_gone(0):
                    self._signal_all(signal.SIGTERM)
                    if not self._wait_gone(timeout):
                        self._signal_all(signal.SIGKILL)
                        self._wait_gone(5.0)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            _LIVE.discard(self)
        return self.popen.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@atexit.register
def _stop_leftovers() -> None:
    # Last line of defence when a caller forgot a Stack or died on an exception:
    # servers in their own sessions would otherwise outlive the interpreter.
    for proc in list(_LIVE):
        proc.stop(timeout=5.0)


def _open_log(log_path: Path, name: str, argv: Sequence[str]) -> IO[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Truncate: the tail shown on failure must belong to this run, not an earlier one.
    log = log_path.open("wb")
    log.write(f"=== {name}: {' '.join(argv)}\n".encode())
    log.flush()
    return log


def start(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: Path | None,
    log_path: Path,
    *,
    soft_signals: tuple[signal.Signals, ...] = (),
    grace: float = 3.0,
) -> Proc:
    """Start ``argv`` in a new session, stdout+stderr to ``log_path`` (truncated first).

    ``env`` is the complete environment (None inherits ours); keep secrets there, not in
    ``argv``, which is written to the log. ``soft_signals`` go to the group before SIGTERM
    on ``stop()``, ``grace`` seconds apart.
    """
    log = _open_log(log_path, name, argv)
    try:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        log.close()
        raise
    proc = Proc(name, popen, log_path, soft_signals, grace, log)
    _LIVE.add(proc)
    return proc


def run(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: Path | None,
    log_path: Path,
    *,
    timeout: float = 120.0,
) -> None:
    """Run a one-shot command to completion (own process group, output to ``log_path``).

    Raises StartupError with the log tail if it fails or overruns ``timeout``.
    """
    proc = start(name, argv, env, cwd, log_path)
    try:
        code = proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.stop(timeout=5.0)
        raise StartupError(
            f"{name} did not finish within {timeout:.0f}s; last lines of {log_path}:\n{proc.tail()}"
        ) from None
    proc.stop(timeout=5.0)  # reaps helpers it may have left in its group
    if code != 0:
        raise StartupError(f"{name} exited with {code}; last lines of {log_path}:\n{proc.tail()}")


def http(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """A tiny JSON HTTP client: (status, decoded JSON body or raw text or None).

    HTTP error statuses are returned, not raised; connection errors raise OSError.
    """
    data = None if json_body is None else json.dumps(json_body).encode()
    # Only http://127.0.0.1 URLs built by this package reach here.
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status: int = response.status
            raw: bytes = response.read()
    except urllib.error.HTTPError as err:
        # Close it: an unclosed error response is a ResourceWarning, an error under pytest.
        with err:
            status, raw = err.code, err.read()
    if not raw:
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    proc: Proc | None = None,
    interval: float = 0.25,
    describe: Callable[[], str] | None = None,
) -> None:
    """Poll ``check`` until it returns True; fail fast if ``proc`` exits.

    On failure raises StartupError naming ``what``, the last observation (``describe``) and
    the last lines of ``proc``'s log.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        reason = None
        if proc is not None and not proc.alive():
            reason = f"{proc.name} exited with {proc.popen.returncode}"
        elif time.monotonic() >= deadline:
            reason = f"timed out after {timeout:.0f}s"
        if reason is not None:
            message = f"waiting for {what}: {reason}"
            if describe is not None:
                message += f"; last observation: {describe()}"
            if proc is not None:
                message += f"\nlast lines of {proc.log_path}:\n{proc.tail()}"
            raise StartupError(message)
        time.sleep(interval)


def wait_http(
    url: str,
    timeout: float,
    ok: Callable[[int], bool] = lambda status: status == 200,
    *,
    proc: Proc | None = None,
    headers: Mapping[str, str] | None = None,
    interval: float = 0.25,
) -> None:
    """Poll ``GET url`` until ``ok(status)``; bounded, fails fast if ``proc`` dies."""
    last = "no answer yet"

    def check() -> bool:
        nonlocal last
        try:
            status, _ = http("GET", url, headers=headers, timeout=min(5.0, timeout))
        except OSError as err:  # refused / reset / timeout while the server boots
            last = repr(err)
            return False
        last = f"HTTP {status}"
        return ok(status)

    wait_until(check, timeout, url, proc=proc, interval=interval, describe=lambda: last)


class Stack:
    """Owns started processes; stops them in reverse start order (also on failure).

    >>> with Stack() as stack:
    ...     api = stack.start("api", [...], env, cwd, log)
    ...     wait_http(url, 30, proc=api)   # a failure here still stops ``api``

    ``pop_all()`` hands the processes to a new Stack, for a function that starts several
    services and returns them only once all are up.
    """

    def __init__(self) -> None:
        self._exit = contextlib.ExitStack()
        self.procs: list[Proc] = []

    def add(self, proc: Proc, timeout: float = 10.0) -> Proc:
        self.procs.append(proc)
        self._exit.callback(proc.stop, timeout)
        return proc

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        cwd: Path | None,
        log_path: Path,
        *,
        soft_signals: tuple[signal.Signals, ...] = (),
        grace: float = 3.0,
        stop_timeout: float = 10.0,
    ) -> Proc:
        proc = start(name, argv, env, cwd, log_path, soft_signals=soft_signals, grace=grace)
        return self.add(proc, stop_timeout)

    def callback(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on close (in reverse order with the processes)."""
        self._exit.callback(fn)

    def pop_all(self) -> Stack:
        new = Stack()
        new._exit = self._exit.pop_all()
        new.procs, self.procs = self.procs, []
        return new

    def close(self) -> None:
        try:
            self._exit.close()
        finally:
            self.procs = []

    def __iter__(self) -> Iterator[Proc]:
        return iter(self.procs)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
